"""Headless Chromium runs OpenAI's browser quick-start code, unchanged but for the base URL,
against the real server: libwebrtc's trickle offer (no candidates), CORS from another
origin, hands-free (OpenAI's default session), and the answer's events and audio."""

from __future__ import annotations

import asyncio
import os
import json
import shutil
import subprocess
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from core.audio import write_wav
from rig.server_process import ServerProcess, start_server

pytestmark = pytest.mark.timeout(120)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# OpenAI's quick start (platform.openai.com/docs/guides/realtime-webrtc), verbatim but for
# baseUrl and the lines marked REPORT, which hand what happened back to the test.
QUICK_START = """
<!doctype html><html><body><script>
const events = [];                                                           // REPORT
async function init() {
  const tokenResponse = await fetch("/token");
  const data = await tokenResponse.json();
  const EPHEMERAL_KEY = data.value;

  const pc = new RTCPeerConnection();

  const audioElement = document.createElement("audio");
  audioElement.autoplay = true;
  pc.ontrack = (e) => (audioElement.srcObject = e.streams[0]);

  const ms = await navigator.mediaDevices.getUserMedia({ audio: true });
  pc.addTrack(ms.getTracks()[0]);

  const dc = pc.createDataChannel("oai-events");
  dc.addEventListener("message", (e) => {
    const event = JSON.parse(e.data);
    console.log(event);
    events.push(event);                                                      // REPORT
    if (event.type === "response.done") report(pc, "done");                  // REPORT
  });

  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);

  const baseUrl = "BASE_URL/realtime/calls";
  const model = "gpt-realtime";
  const sdpResponse = await fetch(`${baseUrl}?model=${model}`, {
    method: "POST",
    body: offer.sdp,
    headers: {
      Authorization: `Bearer ${EPHEMERAL_KEY}`,
      "Content-Type": "application/sdp",
    },
  });

  const answer = {
    type: "answer",
    sdp: await sdpResponse.text(),
  };
  await pc.setRemoteDescription(answer);
  window.offerHadCandidates = offer.sdp.includes("a=candidate");              // REPORT
}

let reported = false;                                                        // REPORT
async function report(pc, how) {                                             // REPORT
  if (reported) return; reported = true;
  await new Promise((r) => setTimeout(r, 300));
  let energy = 0;
  (await pc.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "audio") energy = s.totalAudioEnergy || 0;
  });
  await fetch("/result", {method: "POST", body: JSON.stringify({how, energy, events,
    offerHadCandidates: window.offerHadCandidates})});
}
init().catch((e) => fetch("/result", {method: "POST", body: JSON.stringify({how: "error: " + e})}));
setTimeout(() => report(null, "timeout").catch(() => {}), 40000);
</script></body></html>
"""


def chromium_flags(profile: Path, wav: Path) -> list[str]:
    return [
        "--headless=new", "--no-sandbox", f"--user-data-dir={profile}",
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}", "--autoplay-policy=no-user-gesture-required",
        "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", "--disable-gpu",
        # Nothing leaves loopback: Chromium otherwise looks up Google hosts even here.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    ]


@pytest.fixture
def question_wav(tmp_path: Path) -> Path:
    from rig.speech_samples import make_speech_wav, read_wav_int16

    samples, rate = read_wav_int16(make_speech_wav("what time is it", tmp_path / "question.wav"))
    # Chromium loops the file: a long pause lets the answer play out before the question repeats.
    padded = np.concatenate([np.zeros(rate // 2, np.int16), samples, np.zeros(rate * 5, np.int16)])
    assert rate == 48000
    write_wav(tmp_path / "question-padded.wav", padded)
    return tmp_path / "question-padded.wav"


async def test_openai_quick_start_in_chromium_gets_an_answer(tmp_path: Path, question_wav: Path) -> None:
    if CHROMIUM is None:
        # ./bootstrap.sh test installs it, so in CI a missing browser is a set-up failure.
        (pytest.fail if os.environ.get("CI") else pytest.skip)(
            "chromium is not installed (apt-get install -y chromium; ./bootstrap.sh test does it)")
    result: asyncio.Future[dict] = asyncio.get_running_loop().create_future()
    page = web.Application()
    server: ServerProcess | None = None

    async def token(_request: web.Request) -> web.Response:
        # The quick start's own backend: it holds the server key and hands out ephemeral keys.
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{server.base_url}/realtime/client_secrets",
                                 headers={"Authorization": f"Bearer {server.server_key}"},
                                 json={"session": {"type": "realtime", "model": "gpt-realtime"}}) as response:
                return web.json_response(await response.json(), status=response.status)

    async def receive(request: web.Request) -> web.Response:
        if not result.done():
            result.set_result(json.loads(await request.text()))
        return web.Response(text="ok")

    async def index(_request: web.Request) -> web.Response:
        return web.Response(text=QUICK_START.replace("BASE_URL", server.base_url), content_type="text/html")

    page.router.add_get("/", index)
    page.router.add_get("/token", token)
    page.router.add_post("/result", receive)
    runner = web.AppRunner(page, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    page_port = site._server.sockets[0].getsockname()[1]
    origin = f"http://127.0.0.1:{page_port}"
    browser = None
    try:
        server = start_server(tmp_path, "--allow-origin", origin)
        browser = subprocess.Popen([CHROMIUM, *chromium_flags(tmp_path / "profile", question_wav), f"{origin}/"],
                                   stdout=subprocess.DEVNULL, stderr=open(tmp_path / "chromium.log", "w"))
        outcome = await asyncio.wait_for(result, 60)
    finally:
        if browser is not None:
            browser.terminate()
            try:
                browser.wait(10)
            except subprocess.TimeoutExpired:
                browser.kill()
        await runner.cleanup()
        if server is not None:
            assert server.stop() == 0
    assert outcome["how"] == "done", (outcome, server.stderr()[-3000:])
    types = [e["type"] for e in outcome["events"]]
    assert types[0] == "session.created"
    assert not outcome["offerHadCandidates"], "expected Chromium's trickle offer (no candidates)"
    for expected in ("input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                     "conversation.item.input_audio_transcription.completed", "output_audio_buffer.started",
                     "response.output_audio_transcript.done", "response.done"):
        assert expected in types, types
    heard = next(e for e in outcome["events"] if e["type"].endswith("transcription.completed"))["transcript"]
    assert "time" in heard
    done = next(e for e in outcome["events"] if e["type"] == "response.done")
    assert done["response"]["status"] == "completed"
    assert outcome["energy"] > 0.01, outcome["energy"]  # the answer's audio reached Chromium's decoder
