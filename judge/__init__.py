"""quantmedic.judge: step-level LLM judges that locate and classify the first wrong step."""

from .adapters import load_attempts
from .backend import ChatBackend, Endpoint
from .cache import ResponseCache
from .runner import JudgeConfig, JudgeRun, JudgeSpec
from .segment import split_steps

__all__ = ["ChatBackend", "Endpoint", "JudgeConfig", "JudgeRun", "JudgeSpec", "ResponseCache", "load_attempts",
           "split_steps"]
