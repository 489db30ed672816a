// One RTCPeerConnection to one remote participant, with perfect negotiation
// (https://w3c.github.io/webrtc-pc/#perfect-negotiation-example): either side may offer at any
// time; on a collision the polite side rolls back and the impolite side ignores the other offer.

import { keepSharp } from './media.js';

export class PeerLink extends EventTarget {
  /**
   * @param {object} o
   * @param {string} o.id            the remote peer id
   * @param {boolean} o.polite       this side yields on offer collisions
   * @param {RTCConfiguration} o.rtcConfig
   * @param {(payload: object) => void} o.signal  sends {sdp}|{candidate} to the remote
   * @param {() => object} o.local   returns the current { camStream, screenStream, audio, video, screen }
   */
  constructor({ id, polite, rtcConfig, signal, local }) {
    super();
    this.id = id;
    this.polite = polite;
    this.signal = signal;
    this.localNow = local;
    this.pc = new RTCPeerConnection(rtcConfig);
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.attached = false;
    this.audioTx = null;
    this.videoTx = null;
    this.screenTx = null;
    this.queue = Promise.resolve();
    this.closed = false;

    this.pc.onnegotiationneeded = () => this.negotiate();
    this.pc.onicecandidate = ({ candidate }) => {
      if (candidate) this.signal({ candidate: candidate.toJSON() });
    };
    this.pc.ontrack = ({ track, streams }) => {
      const stream = streams[0] || new MediaStream([track]);
      this.emit('track', { track, stream });
    };
    this.pc.onconnectionstatechange = () => {
      this.emit('state', { state: this.pc.connectionState });
    };
    this.pc.oniceconnectionstatechange = () => {
      // A path that failed (a network change, a NAT rebinding) gets fresh candidates.
      if (this.pc.iceConnectionState === 'failed') this.restartIce();
    };
  }

  get local() {
    return this.localNow();
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  /** The side that joined later offers first: it attaches its media right away. */
  start() {
    const { camStream, audio, video } = this.local;
    this.audioTx = this.pc.addTransceiver(audio || 'audio', { direction: 'sendrecv', streams: [camStream] });
    this.videoTx = this.pc.addTransceiver(video || 'video', { direction: 'sendrecv', streams: [camStream] });
    this.attached = true;
    if (this.local.screen) this.setScreen(this.local.screen);
  }

  /** The answering side reuses the transceivers the first offer created, so one round trip
   *  sets up media both ways. */
  async attachToOffer() {
    const { camStream, audio, video } = this.local;
    for (const tx of this.pc.getTransceivers()) {
      const kind = tx.receiver.track.kind;
      if (kind === 'audio' && !this.audioTx) this.audioTx = tx;
      else if (kind === 'video' && !this.videoTx) this.videoTx = tx;
    }
    for (const [tx, track] of [[this.audioTx, audio], [this.videoTx, video]]) {
      if (!tx) continue;
      tx.direction = 'sendrecv';
      tx.sender.setStreams(camStream);
      await tx.sender.replaceTrack(track || null);
    }
    this.attached = true;
  }

  async negotiate() {
    try {
      this.makingOffer = true;
      await this.pc.setLocalDescription();
      this.signal({ sdp: this.pc.localDescription.toJSON() });
    } catch (e) {
      console.warn(`huddle: offer to ${this.id} failed`, e);
    } finally {
      this.makingOffer = false;
    }
  }

  /** Signals are applied one at a time, in arrival order. */
  handleSignal(msg) {
    this.queue = this.queue.then(() => this.applySignal(msg)).catch((e) => {
      console.warn(`huddle: signal from ${this.id} failed`, e);
    });
    return this.queue;
  }

  async applySignal({ sdp, candidate }) {
    if (this.closed) return;
    const pc = this.pc;
    if (sdp) {
      const collision = sdp.type === 'offer' && (this.makingOffer || pc.signalingState !== 'stable');
      this.ignoreOffer = !this.polite && collision;
      if (this.ignoreOffer) return;
      await pc.setRemoteDescription(sdp); // rolls back our own offer implicitly when polite
      if (sdp.type === 'offer') {
        if (!this.attached) await this.attachToOffer();
        await pc.setLocalDescription();
        this.signal({ sdp: pc.localDescription.toJSON() });
        if (this.local.screen && !this.screenTx) this.setScreen(this.local.screen);
      }
    } else if (candidate) {
      try {
        await pc.addIceCandidate(candidate);
      } catch (e) {
        if (!this.ignoreOffer) throw e;
      }
    }
  }

  /** Swaps the camera or microphone track without renegotiating. */
  async setTrack(kind, track) {
    const tx = kind === 'audio' ? this.audioTx : this.videoTx;
    if (tx) await tx.sender.replaceTrack(track || null);
  }

  /** Starts (track) or stops (null) sending a screen share as its own stream. */
  async setScreen(track) {
    if (!this.attached) return; // attached later, with the screen, once the first offer is in
    if (track && !this.screenTx) {
      this.screenTx = this.pc.addTransceiver(track, { direction: 'sendonly', streams: [this.local.screenStream] });
      await keepSharp(this.screenTx.sender);
      return;
    }
    if (this.screenTx) await this.screenTx.sender.replaceTrack(track || null);
  }

  restartIce() {
    if (!this.closed) this.pc.restartIce();
  }

  close() {
    this.closed = true;
    this.pc.close();
  }
}
