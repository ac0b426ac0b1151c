"""One chat record of every kind (chat_templates.md §4), shared by the template and Jinja tests."""
from __future__ import annotations

import json

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather now",
    "parameters": {"type": "object", "properties": {
        "location": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["location"]}}}
STOCK_TOOL = {"type": "function", "function": {"name": "get_stock_price", "parameters": {
    "type": "object", "properties": {"ticker": {"type": "string"}}, "required": ["ticker"]}}}

# one record of every kind (spec §4); the same records are rendered by the exported Jinja template
RECORDS = {
    "openai": {"messages": [{"role": "system", "content": "Be brief."},
                            {"role": "user", "content": "Hi\r\n\r\n\r\nthere  "},
                            {"role": "assistant", "content": "Hello.\n\nHow can I help?"},
                            {"role": "user", "content": "2+2?"},
                            {"role": "assistant", "content": "4"}]},
    "openai_think": {"messages": [{"role": "user", "content": "2+3?"},
                                  {"role": "assistant", "content": "5", "reasoning_content": "2 plus 3\n\nis 5"}]},
    "openai_inline_think": {"messages": [{"role": "user", "content": "2+3?"},
                                         {"role": "assistant", "content": "<think>add them</think>5"}]},
    "openai_fake_think": {"messages": [{"role": "user", "content": "2+3?"},
                                       {"role": "assistant", "content": "5", "thinking": ""}]},
    "openai_tools": {"tools": [WEATHER_TOOL, STOCK_TOOL],
                     "messages": [{"role": "user", "content": "Weather in Paris?"},
                                  {"role": "assistant", "tool_calls": [{"type": "function", "function": {
                                      "name": "get_weather", "arguments": "{\"location\": \"Paris\"}"}}]},
                                  {"role": "tool", "name": "get_weather", "content": "{\"temp\": 21}"},
                                  {"role": "assistant", "content": "It is 21 degrees."}]},
    "sharegpt": {"system": "S!", "tools": json.dumps([STOCK_TOOL]),
                 "conversations": [{"from": "human", "value": "AAPL?"},
                                   {"from": "function_call", "value": "{\"name\": \"get_stock_price\", "
                                                                      "\"arguments\": {\"ticker\": \"AAPL\"}}"},
                                   {"from": "observation", "value": "{\"price\": 190}"},
                                   {"from": "gpt", "value": "190 dollars."},
                                   {"from": "human", "value": "Thanks"},
                                   {"from": "gpt_ignore", "value": "You are welcome."}]},
    "alpaca": {"system": "You translate.", "instruction": "Translate", "input": "chat",
               "output": "cat", "history": [["Translate dog", "chien"]]},
    "trl_prompt_completion": {"prompt": [{"role": "user", "content": "Capital of France?"}],
                              "completion": [{"role": "assistant", "content": "Paris."}]},
}
