"""Screenshot of a running sweep's Ray dashboard with headless Chromium, signed in with Ray's token.

Usage: python scripts/dashboard_screenshot.py DASHBOARD_URL OUT.png [HASH_ROUTE]   (the token: `ray get-auth-token`)
Chromium is driven over the DevTools protocol (aiohttp, a ray[default] dependency): the token
is set as the `ray-authentication-token` cookie, the one the dashboard's own sign-in box
(POST /api/authenticate) sets, so the page shows the cluster instead of its sign-in dialog.
"""
import asyncio
import base64
import io
import json
import subprocess
import sys
import tempfile
import time
import urllib.request

import aiohttp
from PIL import Image

PORT = 9333
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--window-size=1280,960", f"--remote-debugging-port={PORT}"]


async def shoot(url: str, token: str, out: str, route: str) -> None:
    for _ in range(100):
        try:
            targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{PORT}/json/list", timeout=2))
            break
        except OSError:
            time.sleep(0.3)
    page = next(t for t in targets if t["type"] == "page")
    async with aiohttp.ClientSession() as session, session.ws_connect(page["webSocketDebuggerUrl"],
                                                                      max_msg_size=0) as ws:
        counter = 0

        async def call(method, **params):
            nonlocal counter
            counter += 1
            await ws.send_json({"id": counter, "method": method, "params": params})
            async for message in ws:
                data = json.loads(message.data)
                if data.get("id") == counter:
                    if "error" in data:
                        raise RuntimeError(f"{method}: {data['error']}")
                    return data["result"]

        await call("Network.enable")
        await call("Network.setCookie", name="ray-authentication-token", value=token, url=url, path="/",
                   httpOnly=True, sameSite="Strict")
        await call("Page.enable")
        await call("Page.navigate", url=url + "/#/" + route)
        await asyncio.sleep(15)  # the page polls the API every few seconds: let it fill in
        shot = await call("Page.captureScreenshot", format="png")
    image = Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("RGB")
    image.quantize(colors=128).save(out, optimize=True)


def main() -> None:
    url, out = sys.argv[1].rstrip("/"), sys.argv[2]
    route = sys.argv[3] if len(sys.argv) > 3 else "overview"
    token = subprocess.run(["ray", "get-auth-token"], capture_output=True, text=True, check=True).stdout.strip()
    with tempfile.TemporaryDirectory() as profile:
        browser = subprocess.Popen(["chromium", *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            asyncio.run(shoot(url, token, out, route))
        finally:
            browser.terminate()
            browser.wait(timeout=30)


if __name__ == "__main__":
    main()
