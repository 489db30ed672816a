"""The tutorials' signaling server, for side-by-side benchmarks: python-socketio on aiohttp, rooms
of up to 6, `signal` relayed only to the addressed peer of the same room, presence events.
Same semantics as Huddle's /ws, Socket.IO's wire format.  Usage: python signal_socketio.py PORT"""

import sys

import socketio
from aiohttp import web

sio = socketio.AsyncServer(async_mode="aiohttp", cors_allowed_origins="*")
app = web.Application()
sio.attach(app)

CAPACITY = 6
rooms = {}  # room -> {sid: name}
where = {}  # sid -> room


@sio.event
async def join(sid, data):
    room = data.get("room")
    name = data.get("name")
    if not isinstance(room, str) or not isinstance(name, str) or sid in where:
        await sio.emit("error", {"code": "bad-message"}, to=sid)
        return
    peers = rooms.setdefault(room, {})
    if len(peers) >= CAPACITY:
        await sio.emit("error", {"code": "room-full"}, to=sid)
        return
    await sio.emit("welcome", {"v": 1, "id": sid, "room": room,
                               "peers": [{"id": p, "name": n} for p, n in peers.items()]}, to=sid)
    await sio.emit("peer-joined", {"peer": {"id": sid, "name": name}}, room=room)
    peers[sid] = name
    where[sid] = room
    await sio.enter_room(sid, room)


@sio.event
async def signal(sid, data):
    room = where.get(sid)
    to = data.get("to") if isinstance(data, dict) else None
    if room is None or to not in rooms.get(room, {}) or to == sid:
        await sio.emit("error", {"code": "unknown-peer"}, to=sid)
        return
    out = {"from": sid}
    for key in ("sdp", "candidate"):
        if key in data:
            out[key] = data[key]
    await sio.emit("signal", out, to=to)


@sio.event
async def disconnect(sid, *args):
    room = where.pop(sid, None)
    if room is None:
        return
    peers = rooms.get(room, {})
    peers.pop(sid, None)
    if not peers:
        rooms.pop(room, None)
    await sio.emit("peer-left", {"id": sid, "reason": "left"}, room=room)


if __name__ == "__main__":
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
