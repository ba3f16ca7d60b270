"""Clients for the language models that mecharule *asks* (feature proposer, jailbreak judge).

Not to be confused with :mod:`mecharule.models`, the models that mecharule *studies*.
"""

from mecharule.llm.client import ChatClient, ChatCompleter, LLMAuthError, LLMError

__all__ = ["ChatClient", "ChatCompleter", "LLMAuthError", "LLMError"]
