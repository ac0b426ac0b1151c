"""ModelConfig lives in rwkvft.models.schema; this name is kept for existing imports."""
from .schema import ModelConfig

__all__ = ["ModelConfig"]
