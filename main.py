"""Sandra Desktop entry point.

    sandra                       the window (local realtime server, no key needed)
    sandra serve …               the local realtime server
    sandra metrics-server …      the metrics receiver
    sandra talk …                one call from the command line
    sandra --self-test           headless checks; exit 0 only if all pass
    sandra --screenshot PATH     render the window offscreen to a PNG

Heavy modules are imported only by the command that needs them, so the window paints
fast and `--help` answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable

__version__ = "0.1.0"

# Subcommands and the function that runs each (it parses its own arguments).
SUBCOMMANDS = {
    "serve": ("server.realtime.cli:main", "run the local realtime server"),
    "metrics-server": ("server.metrics.cli:main", "run the metrics receiver"),
    "talk": ("core.talk:main", "make one call from the command line"),
}


def _call(target: str, argv: list[str]) -> int:
    module, _, name = target.partition(":")
    return int(getattr(importlib.import_module(module), name)(argv) or 0)


def build_parser() -> argparse.ArgumentParser:
    epilog = "commands:\n" + "\n".join(f"  {name:<16}{help_}" for name, (_, help_) in SUBCOMMANDS.items())
    parser = argparse.ArgumentParser(
        prog="sandra",
        description="Sandra Desktop: hold a button, speak, let go, and it answers out loud.",
        epilog=epilog + "\n\n'sandra COMMAND --help' tells more about a command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"Sandra Desktop {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more detail on the console (-vv for debug)")
    parser.add_argument("--self-test", action="store_true", help="run headless checks and exit")
    parser.add_argument("--screenshot", metavar="PATH", help="render the window offscreen to a PNG and exit")
    parser.add_argument("--demo", action="store_true", help="with --screenshot: fill the window with a sample call")
    parser.add_argument("--size", default="1100x720", metavar="WxH", help="with --screenshot: window size")
    return parser


def has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def x_display_answers(display: str) -> bool | None:
    """Whether the X server named by `display` accepts a connection; None when we cannot tell.

    Asked through libxcb, the library Qt's xcb plugin connects with, so a server that
    is gone or refuses us (authorization) is found here: Qt itself would abort the
    process with a core dump and a page of plugin advice.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("xcb")
    if name is None:
        return None  # no libxcb: Qt's own error (missing libraries) is the right one then
    try:
        xcb = ctypes.CDLL(name)
    except OSError:
        return None
    xcb.xcb_connect.restype = ctypes.c_void_p
    xcb.xcb_connect.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    xcb.xcb_connection_has_error.argtypes = [ctypes.c_void_p]
    xcb.xcb_disconnect.argtypes = [ctypes.c_void_p]
    connection = xcb.xcb_connect(display.encode(), None)  # never NULL: an error object at worst
    try:
        return xcb.xcb_connection_has_error(connection) == 0
    finally:
        xcb.xcb_disconnect(connection)


def display_problem() -> str | None:
    """One sentence saying why the window cannot open here, or None when it can (as far as we can tell)."""
    platform = os.environ.get("QT_QPA_PLATFORM", "")
    if platform in ("offscreen", "minimal"):
        return None
    if not has_display():
        return ("sandra: no display found (DISPLAY and WAYLAND_DISPLAY are unset). Run it on a desktop, "
                "or try 'xvfb-run python main.py', or 'python main.py --screenshot window.png'.")
    display = os.environ.get("DISPLAY", "")
    # Qt picks X (xcb) when told to, or when there is no Wayland display to prefer.
    uses_x = platform.startswith("xcb") or (not platform and not os.environ.get("WAYLAND_DISPLAY"))
    if uses_x and display and x_display_answers(display) is False:
        return (f"sandra: cannot open the window: no X server answers at DISPLAY={display} (is the desktop "
                "session running, and is DISPLAY right?); without a screen, try 'xvfb-run python main.py'.")
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        return _call(SUBCOMMANDS[argv[0]][0], argv[1:])

    args = build_parser().parse_args(argv)
    from base.logs import setup_logging

    if args.self_test:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        setup_logging(args.verbose, log_file="selftest.log", console=args.verbose > 0)
        from base import selftest

        return 0 if selftest.run(SELF_TEST_CHECKS, sys.stdout, verbose=args.verbose > 0) else 1

    setup_logging(args.verbose)
    if args.screenshot:
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
        return _call("gui.app:screenshot", [args.screenshot, args.size, "demo" if args.demo else ""])
    problem = display_problem()
    if problem is not None:
        print(problem, file=sys.stderr)
        return 1
    return _call("gui.app:run", [])


def check_talk_turn() -> str:
    """The client's engine asks the embedded server a question spoken by the server's voice."""
    import asyncio

    from core.selftest import talk_turn
    from server.realtime.tts import Synthesizer

    synthesizer = Synthesizer()
    try:
        question = asyncio.run(synthesizer.synthesize("what time is it"))
    finally:
        synthesizer.close()
    return talk_turn(question)


# --self-test, cheap checks first, real calls last. Only this module knows all three
# sides (client, window, server), so the list lives here.
SELF_TEST_CHECKS: list[tuple[str, str | Callable[[], str]]] = [
    ("runtime libraries", "base.selftest:check_runtime"),
    ("sound library", "base.selftest:check_portaudio"),
    ("main window", "gui.selftest:selftest_check"),
    ("metrics receiver", "server.metrics.selftest:selftest_check"),
    ("local server: speech in, speech out", "server.realtime.selftest:selftest_check"),
    ("push-to-talk turn with the embedded server", check_talk_turn),
]


if __name__ == "__main__":
    sys.exit(main())
