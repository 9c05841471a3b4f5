"""Every kind of provider, described once: the dialog, the config and the engine read this.

Pure data: what the user picks from (label, models, voices), which settings fields
the kind uses, whether it needs a key, and how its key request authenticates. How to
talk to a provider is core/providers.py; which one the user chose is core/config.py.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

OPENAI_BASE_URL = "https://api.openai.com/v1"
# OpenAI's realtime voices and models (API reference, realtime sessions).
OPENAI_VOICES = ("marin", "cedar", "alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse")
OPENAI_MODELS = ("gpt-realtime", "gpt-realtime-mini", "gpt-4o-realtime-preview", "gpt-4o-mini-realtime-preview")
LOCAL_MODEL = "sandra-local"
# The voices the built-in server's espeak-ng speaks with (it ships English voices only).
LOCAL_VOICES = ("en-us", "en", "en-gb-x-rp", "en-us+f3", "en-us+m3")


class Auth(enum.Enum):
    BEARER = "bearer"  # Authorization: Bearer KEY (OpenAI and its copies)
    API_KEY_HEADER = "api-key"  # Azure's resource key header


@dataclass(frozen=True)
class ProviderKind:
    id: str
    label: str
    needs_key: bool  # no call without one
    takes_key: bool  # a key may be given (the token URL's own bearer key is optional)
    auth: Auth
    default_model: str
    models: tuple[str, ...]  # offered in a list; "other" is free text where `free_model`
    voices: tuple[str, ...]
    free_model: bool = True
    uses_base_url: bool = False
    uses_azure_resource: bool = False
    uses_token_url: bool = False


KINDS: dict[str, ProviderKind] = {k.id: k for k in (
    ProviderKind("local", "Local (offline, built in)", needs_key=False, takes_key=False, auth=Auth.BEARER,
                 default_model=LOCAL_MODEL, models=(LOCAL_MODEL,), voices=LOCAL_VOICES, free_model=False),
    ProviderKind("openai", "OpenAI", needs_key=True, takes_key=True, auth=Auth.BEARER,
                 default_model="gpt-realtime", models=OPENAI_MODELS, voices=OPENAI_VOICES),
    ProviderKind("azure", "Azure OpenAI", needs_key=True, takes_key=True, auth=Auth.API_KEY_HEADER,
                 # On Azure the model is the deployment's name: the list only suggests.
                 default_model="gpt-realtime", models=OPENAI_MODELS, voices=OPENAI_VOICES,
                 uses_azure_resource=True),
    ProviderKind("custom", "Custom URL (OpenAI-compatible)", needs_key=False, takes_key=True, auth=Auth.BEARER,
                 default_model="gpt-realtime", models=OPENAI_MODELS, voices=OPENAI_VOICES, uses_base_url=True),
    ProviderKind("token_url", "Token URL (your own token endpoint)", needs_key=False, takes_key=True,
                 auth=Auth.BEARER, default_model="gpt-realtime", models=OPENAI_MODELS, voices=OPENAI_VOICES,
                 uses_base_url=True, uses_token_url=True),
)}
DEFAULT_KIND = "local"


def kind(kind_id: str) -> ProviderKind:
    """The kind by id; KeyError for one that does not exist (config validates before)."""
    return KINDS[kind_id]
