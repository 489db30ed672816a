// The page's media in an SFU room (protocol v2, docs/protocol.md "SFU rooms"): two
// RTCPeerConnections with the server's media peer, whose signals travel to and from the peer id
// `sfu`. On `up` the page offers what it sends (camera in three simulcast layers, microphone,
// screen share) and the server answers; on `down` the server offers lines for the others'
// tracks — up to 32 video and 6 audio lines, which it moves to the tiles shown and the voices
// heard — the page answers, and a `tracks` message says whose track each line carries now. Each
// side always offers on its own connection, so offers never collide.

import { keepSharp } from './media.js';

/** The camera's simulcast layers, smallest first: ¼, ½ and full resolution. */
const CAMERA_LAYERS = [
  { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
  { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  { rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 1_500_000 },
];

/** A screen share's layers: full resolution for the tile shown large, half for thumbnails and
 *  short links. Two, not three: a quarter-size screen is unreadable. */
const SCREEN_LAYERS = [
  { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000, maxFramerate: 15 },
  { rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 2_500_000, maxFramerate: 15 },
];

export class SfuLink extends EventTarget {
  /**
   * @param {object} o
   * @param {RTCConfiguration} o.rtcConfig
   * @param {(payload: object) => void} o.signal  sends {sdp} to the media peer
   * @param {() => object} o.local  returns the current { camStream, screenStream, audio, video, screen }
   */
  constructor({ rtcConfig, signal, local }) {
    super();
    this.signal = signal;
    this.localNow = local;
    this.up = new RTCPeerConnection(rtcConfig);
    this.down = new RTCPeerConnection(rtcConfig);
    this.audioTx = null;
    this.videoTx = null;
    this.screenTx = null;
    this.closed = false;
    // Auto rooms: not sending while a direct call carries the media. `layers` keeps what the
    // server asked of each line, applied when sending again.
    this.paused = false;
    this.layers = new Map();
    // Offers on `up` go one at a time: the next waits for the answer to the last.
    this.upQueue = Promise.resolve();
    this.downQueue = Promise.resolve();
    this.awaitingAnswer = null;

    this.up.onnegotiationneeded = () => this.offer();
    this.down.ontrack = ({ track, transceiver }) => {
      this.emit('track', { track, mid: transceiver.mid });
    };
    this.down.onconnectionstatechange = () => {
      this.emit('state', { state: this.down.connectionState });
    };
    for (const pc of [this.up, this.down]) {
      pc.oniceconnectionstatechange = () => {
        if (pc.iceConnectionState === 'failed' && pc === this.up) this.up.restartIce();
      };
    }
  }

  /** The sending connection, as the page's loops over links read it (ICE state). */
  get pc() {
    return this.up;
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  /** Starts sending: microphone and camera (with its layers), and the screen if shared. */
  start() {
    const { camStream, audio, video, screen } = this.localNow();
    this.audioTx = this.up.addTransceiver(audio || 'audio', { direction: 'sendonly', streams: [camStream] });
    this.videoTx = this.up.addTransceiver(video || 'video', {
      direction: 'sendonly',
      streams: [camStream],
      sendEncodings: CAMERA_LAYERS,
    });
    if (screen) this.setScreen(screen);
  }

  offer() {
    this.upQueue = this.upQueue.then(async () => {
      if (this.closed) return;
      await this.up.setLocalDescription();
      const answered = new Promise((resolve) => { this.awaitingAnswer = resolve; });
      this.signal({ sdp: this.up.localDescription.toJSON() });
      await answered;
    }).catch((e) => console.warn('huddle: offer to the media peer failed', e));
  }

  /** An answer is for `up`, an offer for `down`. */
  handleSignal({ sdp }) {
    if (!sdp || this.closed) return;
    if (sdp.type === 'answer') {
      this.up.setRemoteDescription(sdp)
        .catch((e) => console.warn('huddle: the media peer\'s answer failed', e))
        .finally(() => this.awaitingAnswer?.());
      return;
    }
    this.downQueue = this.downQueue.then(async () => {
      await this.down.setRemoteDescription(sdp);
      await this.down.setLocalDescription();
      this.signal({ sdp: this.down.localDescription.toJSON() });
    }).catch((e) => console.warn('huddle: the media peer\'s offer failed', e));
  }

  /** The media peer refused what the page sent: let the next offer go. */
  refused() {
    this.awaitingAnswer?.();
  }

  /** The receiving line that carries `track`, if any. */
  midOf(track) {
    return this.down.getTransceivers().find((t) => t.receiver.track === track)?.mid || null;
  }

  /** The receiving line `mid`'s current track, if it has come. */
  track(mid) {
    return this.down.getTransceivers().find((t) => t.mid === mid)?.receiver.track;
  }

  /** Which of the simulcast layers anyone receives: the others stop being encoded. */
  async setLayers(mid, active) {
    this.layers.set(mid, active);
    const tx = this.up.getTransceivers().find((t) => t.mid === mid);
    if (tx) await this.apply(tx);
  }

  /** Stops (or resumes) sending to the server without renegotiating: an auto room's direct
   *  call carries the media meanwhile (Jitsi turns its bridge encodings off the same way). */
  async setPaused(paused) {
    if (this.paused === paused || this.closed) return;
    this.paused = paused;
    for (const tx of this.up.getTransceivers()) await this.apply(tx);
  }

  async apply(tx) {
    const params = tx.sender.getParameters();
    if (!params.encodings?.length) return;
    const wanted = this.layers.get(tx.mid);
    params.encodings.forEach((e, i) => {
      e.active = !this.paused && (!wanted || wanted.length !== params.encodings.length || Boolean(wanted[i]));
    });
    await tx.sender.setParameters(params).catch(() => {});
  }

  /** Swaps the camera or microphone track without renegotiating. */
  async setTrack(kind, track) {
    const tx = kind === 'audio' ? this.audioTx : this.videoTx;
    if (tx) await tx.sender.replaceTrack(track || null);
  }

  /** Starts (track) or stops (null) sending a screen share. */
  async setScreen(track) {
    if (track && !this.screenTx) {
      this.screenTx = this.up.addTransceiver(track, {
        direction: 'sendonly',
        streams: [this.localNow().screenStream],
        sendEncodings: SCREEN_LAYERS,
      });
      await keepSharp(this.screenTx.sender);
      return;
    }
    if (this.screenTx) await this.screenTx.sender.replaceTrack(track || null);
  }

  restartIce() {
    if (!this.closed) this.up.restartIce();
  }

  close() {
    this.closed = true;
    this.awaitingAnswer?.();
    this.up.close();
    this.down.close();
  }
}
