"""The real bundle: build it with packaging/build.sh, then run it outside the venv.

One build per module (about a minute), into a temporary folder so parallel runs do not
collide. The bundle runs with a clean environment: PATH without the venv, no
PYTHONPATH or VIRTUAL_ENV, HOME in a temporary folder.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "packaging"))
import licenses  # noqa: E402

pytestmark = pytest.mark.slow

SIZE_LIMIT = 400 * 1000 * 1000  # bytes, uncompressed


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8", **extra}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The dist folder of a fresh build: sandra/ and the tarball."""
    out = tmp_path_factory.mktemp("package")
    env = {**os.environ, "SANDRA_DIST": str(out / "dist"), "SANDRA_WORK": str(out / "build")}
    result = subprocess.run(
        [str(ROOT / "packaging" / "build.sh")], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"build failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    assert "MB uncompressed" in result.stdout, result.stdout
    return out / "dist"


@pytest.fixture(scope="module")
def bundle(built: Path) -> Path:
    return built / "sandra"


@pytest.fixture(scope="module")
def self_test(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, str]:
    """Run `sandra --self-test` once, with the dynamic loader telling which libraries it opened."""
    tmp = tmp_path_factory.mktemp("selftest")
    env = clean_env(tmp / "home", LD_DEBUG="libs", LD_DEBUG_OUTPUT=str(tmp / "ld"))
    result = subprocess.run(
        [str(bundle / "sandra"), "--self-test"], env=env, cwd=tmp, capture_output=True, text=True, timeout=240
    )
    loaded = "".join(p.read_text(errors="replace") for p in tmp.glob("ld.*"))
    return result, loaded


def test_self_test_passes_outside_the_venv(self_test) -> None:
    result, _ = self_test
    assert result.returncode == 0 and result.stdout.rstrip().endswith("PASS"), result.stdout + result.stderr
    # Every check the source knows ran in the bundle: none was lost to a missing module.
    sys.path.insert(0, str(ROOT))
    import main

    for label, _target in main.SELF_TEST_CHECKS:
        assert f"[  ok] {label} (" in result.stdout, f"check {label!r} did not pass in the bundle:\n{result.stdout}"


def test_bundle_opens_its_own_portaudio(self_test, bundle: Path) -> None:
    _, loaded = self_test
    inits = [line for line in loaded.splitlines() if "calling init:" in line and "libportaudio.so" in line]
    assert inits, "PortAudio was never loaded"
    assert all(str(bundle / "_internal" / "libportaudio.so.2") in line for line in inits), inits


def test_size_and_tarball(built: Path, bundle: Path) -> None:
    size = sum(p.lstat().st_size for p in bundle.rglob("*"))
    assert size < SIZE_LIMIT, f"bundle is {size / 1e6:.0f} MB, over the {SIZE_LIMIT / 1e6:.0f} MB limit"
    tarballs = list(built.glob("sandra-*-linux-x86_64.tar.gz"))
    assert len(tarballs) == 1, tarballs
    listing = subprocess.run(["tar", "-tzf", str(tarballs[0])], capture_output=True, text=True, check=True).stdout
    for member in ("sandra/sandra", "sandra/licenses/MANIFEST.json", "sandra/install-desktop-entry.sh", "sandra/LICENSE"):
        assert member in listing.splitlines(), f"{member} is not in {tarballs[0].name}"


def test_licences_cover_what_the_bundle_ships(bundle: Path) -> None:
    manifest = licenses.load_manifest(bundle)
    assert licenses.check(bundle, manifest) == []
    names = {c["component"] for c in manifest}
    # The ones the GPL choice rests on, and the system library we add by hand.
    assert {"espeakng-loader", "pyside6-essentials", "ffmpeg", "libportaudio2", "python", "sandra-desktop"} <= names
    assert "GNU GENERAL PUBLIC LICENSE" in (bundle / "licenses/espeakng-loader/GPL-3").read_text()
    # And the check does notice a library nobody licensed.
    without_portaudio = [c for c in manifest if c["component"] != "libportaudio2"]
    assert "library without a licence entry: _internal/libportaudio.so.2" in licenses.check(bundle, without_portaudio)


def test_speech_data_is_english_only(bundle: Path) -> None:
    data = bundle / "_internal"
    assert (data / "pocketsphinx/model/en-us/cmudict-en-us.dict").is_file()
    assert not (data / "pocketsphinx/model/en-us/en-us.lm.bin").exists()
    dicts = sorted(p.name for p in (data / "espeakng_loader/espeak-ng-data").glob("*_dict"))
    assert dicts == ["en_dict"]
    assert (data / "espeakng_loader/libespeak-ng.so").is_file()


def test_desktop_entry_points_at_the_bundle(bundle: Path, tmp_path: Path) -> None:
    env = clean_env(tmp_path / "home", XDG_DATA_HOME=str(tmp_path / "share"))
    subprocess.run([str(bundle / "install-desktop-entry.sh")], env=env, check=True, capture_output=True, timeout=30)
    entry = (tmp_path / "share/applications/sandra.desktop").read_text()
    assert f'Exec="{bundle}/sandra"' in entry.splitlines()
    assert (tmp_path / "share/icons/hicolor/256x256/apps/sandra.png").stat().st_size > 1000


# ---- the window under a real X server ----------------------------------------------


def start_xvfb(tmp: Path) -> tuple[subprocess.Popen, str]:
    """Xvfb on a display number it picks itself (-displayfd), so parallel runs never clash."""
    read, write = os.pipe()
    xvfb = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write), "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
        pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=(tmp / "xvfb.log").open("w"),
    )
    os.close(write)
    with os.fdopen(read) as f:
        display = ":" + f.readline().strip()
    return xvfb, display


def wait_for(what: str, probe, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def children(pid: int) -> list[tuple[int, str]]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append((int(stat.parent.name), cmdline))
    return found


def sandra_window(display: str) -> bool:
    tree = subprocess.run(
        ["xwininfo", "-root", "-tree"], env={**os.environ, "DISPLAY": display}, capture_output=True, text=True
    ).stdout
    # The main window, not Qt's 1x1 helper windows of the same name.
    return any('"Sandra"' in line and "1x1+" not in line for line in tree.splitlines())


SCREENSHOT = """
import sys
from PySide6.QtGui import QGuiApplication
app = QGuiApplication([])
image = app.primaryScreen().grabWindow(0).toImage()
image.save(sys.argv[1], "PNG")
print(len({image.pixel(x, y) for x in range(0, image.width(), 9) for y in range(0, image.height(), 9)}))
"""


def test_window_on_xvfb_and_clean_sigterm(bundle: Path, tmp_path: Path, pulse) -> None:
    xvfb, display = start_xvfb(tmp_path)
    app = None
    try:
        env = clean_env(tmp_path / "home", DISPLAY=display, QT_QPA_PLATFORM="xcb", **pulse.env)
        log = (tmp_path / "sandra.log").open("w")
        app = subprocess.Popen([str(bundle / "sandra"), "-v"], env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
        wait_for("the window on the X display", lambda: app.poll() is not None or sandra_window(display), 60)
        assert app.poll() is None, (tmp_path / "sandra.log").read_text()
        # The call starts on the embedded server: a child of the same executable.
        servers = wait_for(
            "the embedded `sandra serve`",
            lambda: [c for c in children(app.pid) if c[1].split()[1:2] == ["serve"]], 60
        )
        shot = tmp_path / "screen.png"
        colours = subprocess.run(
            [sys.executable, "-c", SCREENSHOT, str(shot)],
            env={**os.environ, "DISPLAY": display, "QT_QPA_PLATFORM": "xcb"},
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout
        assert shot.stat().st_size > 5000 and int(colours) > 16, f"blank screen ({colours.strip()} colours)"

        app.send_signal(signal.SIGTERM)
        assert app.wait(timeout=30) == 0, (tmp_path / "sandra.log").read_text()
        for pid, cmdline in servers:
            wait_for(f"the server child {pid} to exit", lambda: not Path(f"/proc/{pid}").exists(), 10)
    finally:
        if app is not None and app.poll() is None:
            app.kill()
            app.wait()
        xvfb.terminate()
        xvfb.wait()

