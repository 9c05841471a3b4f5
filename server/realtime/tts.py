"""Speech synthesis with libespeak-ng (from the espeakng-loader wheel) through ctypes.

The wheel only ships the library and its data, so a PyInstaller bundle can carry
them; we call the C API directly. libespeak-ng is not thread-safe (two threads
crashed it every time) and keeps its state in globals, so every library call runs on
the Synthesizer's one worker thread, and a process-wide lock keeps two Synthesizers
from ever being inside the library at once.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import espeakng_loader
import numpy as np

from server.realtime.resample import resample_int16

log = logging.getLogger(__name__)

OUTPUT_RATE = 48000
DEFAULT_VOICE = "en-us"

# espeak_AUDIO_OUTPUT, espeak_PARAMETER, espeak_POSITION_TYPE and flag values from speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_PARAM_RATE = 1
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EE_OK = 0
_MIN_RATE_WPM, _MAX_RATE_WPM = 80, 450

_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

_library_lock = threading.Lock()  # held for every call into the library, by any Synthesizer
_library: ctypes.CDLL | None = None
_library_rate = 0


def _load_library() -> tuple[ctypes.CDLL, int]:
    """The initialised library and its output rate (once per process; call under the lock)."""
    global _library, _library_rate
    if _library is None:
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                     ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0,
                                     espeakng_loader.get_data_path().encode(), 0)
        if rate <= 0:
            raise RuntimeError(f"espeak-ng failed to initialise (data at {espeakng_loader.get_data_path()})")
        _library, _library_rate = lib, rate
        log.debug("libespeak-ng initialised at %d Hz", rate)
    return _library, _library_rate


def english_voice(name: str | None) -> str:
    """An espeak English voice for `name`; anything else ("marin", "alloy", "de") → en-us."""
    lowered = (name or "").strip().lower()
    if lowered == "en-gb":  # espeak files British English as plain "en"
        return "en"
    return lowered if lowered == "en" or lowered.startswith("en-") else DEFAULT_VOICE


class Synthesizer:
    """Text → int16 mono 48 kHz speech; one worker thread does every library call."""

    def __init__(self, voice: str = DEFAULT_VOICE, rate_wpm: int = 165) -> None:
        self._voice = english_voice(voice)
        self._rate_wpm = min(max(rate_wpm, _MIN_RATE_WPM), _MAX_RATE_WPM)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sandra-tts")
        self._chunks: list[np.ndarray] = []
        self._missing: set[str] = set()
        # Kept on the instance: the library holds this pointer while we live.
        self._callback = _SYNTH_CALLBACK(self._collect)

    async def synthesize(self, text: str, voice: str | None = None) -> np.ndarray:
        """The spoken `text` (int16 mono 48 kHz), in `voice` (a session's; None: this
        synthesizer's own), without blocking the event loop."""
        return await asyncio.wrap_future(self._worker.submit(self._synthesize, text, voice))

    def synthesize_blocking(self, text: str, voice: str | None = None) -> np.ndarray:
        """Same as synthesize(), for callers outside asyncio (runs on the same worker)."""
        return self._worker.submit(self._synthesize, text, voice).result()

    def close(self) -> None:
        """Finish queued work and stop the worker thread."""
        self._worker.shutdown(wait=True)

    def _synthesize(self, text: str, voice: str | None) -> np.ndarray:
        encoded = text.encode("utf-8") + b"\0"
        wanted = self._voice if voice is None else english_voice(voice)
        with _library_lock:
            lib, rate = _load_library()
            # The library's voice and rate are global: set ours every time.
            lib.espeak_SetSynthCallback(self._callback)
            if lib.espeak_SetVoiceByName(wanted.encode()) != _EE_OK:
                if wanted not in self._missing:  # said once per voice, not per answer
                    self._missing.add(wanted)
                    log.warning("espeak voice %r not found; using %s", wanted, DEFAULT_VOICE)
                lib.espeak_SetVoiceByName(DEFAULT_VOICE.encode())
            lib.espeak_SetParameter(_PARAM_RATE, self._rate_wpm, 0)
            self._chunks = []
            status = lib.espeak_Synth(encoded, len(encoded), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            chunks, self._chunks = self._chunks, []
        if status != _EE_OK:
            raise RuntimeError(f"espeak-ng could not synthesize (error {status})")
        pcm = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
        return resample_int16(pcm, rate, OUTPUT_RATE)

    def _collect(self, wav: ctypes._Pointer, count: int, _events: int | None) -> int:
        # Called by the library, inside espeak_Synth, on the worker thread.
        if wav and count > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        return 0  # 0 = go on
