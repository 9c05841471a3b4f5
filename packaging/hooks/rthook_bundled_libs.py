# Runtime hook: make ctypes.util.find_library() prefer the libraries inside the bundle.
# sounddevice asks find_library("portaudio") and hands the answer to cffi's dlopen;
# on Linux the stock lookup asks ldconfig, so a machine without libportaudio2 found
# nothing (and one with it loaded the system copy instead of ours).
import ctypes.util
import glob
import os
import sys

_system_find_library = ctypes.util.find_library


def _find_library(name):
    bundled = sorted(glob.glob(os.path.join(sys._MEIPASS, f"lib{glob.escape(name)}.so*")))
    return bundled[0] if bundled else _system_find_library(name)


ctypes.util.find_library = _find_library
