"""The reference for Huddle's media benchmark: the aiortc server pattern that WebRTC tutorials
use (aiohttp, POST /offer with {"sdp", "type", "video_transform"}, a VideoStreamTrack subclass
transforming each frame, audio echoed, data-channel ping/pong). Written for the benchmark on
aiortc's public API; it mirrors what aiortc's examples/server does for `none` and `edges`.

    python bench/aiortc_server.py PORT
"""

import asyncio
import json
import sys

import cv2
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamTrack
from av import VideoFrame

relay = MediaRelay()
peers = set()

PAGE = "<!doctype html><title>aiortc</title><p>aiortc benchmark server</p>"


class VideoTransformTrack(MediaStreamTrack):
    """Receives frames from `track` and returns them, transformed by `transform`."""

    kind = "video"

    def __init__(self, track, transform):
        super().__init__()
        self.track = track
        self.transform = transform

    async def recv(self):
        frame = await self.track.recv()
        if self.transform == "edges":
            img = frame.to_ndarray(format="bgr24")
            img = cv2.cvtColor(cv2.Canny(img, 100, 200), cv2.COLOR_GRAY2BGR)
            out = VideoFrame.from_ndarray(img, format="bgr24")
            out.pts = frame.pts
            out.time_base = frame.time_base
            return out
        return frame


async def index(request):
    return web.Response(content_type="text/html", text=PAGE)


async def offer(request):
    params = await request.json()
    description = RTCSessionDescription(sdp=params["sdp"], type=params["type"])
    # No ICE servers: aiortc would otherwise ask a public STUN server.
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    peers.add(pc)

    @pc.on("datachannel")
    def on_datachannel(channel):
        @channel.on("message")
        def on_message(message):
            if isinstance(message, str) and message.startswith("ping"):
                channel.send("pong" + message[4:])

    @pc.on("connectionstatechange")
    async def on_state():
        if pc.connectionState in ("failed", "closed"):
            await pc.close()
            peers.discard(pc)

    @pc.on("track")
    def on_track(track):
        if track.kind == "audio":
            pc.addTrack(relay.subscribe(track))
        else:
            pc.addTrack(VideoTransformTrack(relay.subscribe(track), params.get("video_transform", "none")))

    await pc.setRemoteDescription(description)
    await pc.setLocalDescription(await pc.createAnswer())
    return web.Response(
        content_type="application/json",
        text=json.dumps({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type}),
    )


async def on_shutdown(app):
    await asyncio.gather(*[pc.close() for pc in peers])
    peers.clear()


if __name__ == "__main__":
    app = web.Application()
    app.on_shutdown.append(on_shutdown)
    app.router.add_get("/", index)
    app.router.add_post("/offer", offer)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
