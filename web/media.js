// Local media: camera and microphone capture, device lists, and words for what went wrong.

export function describeMediaError(err) {
  switch (err && err.name) {
    case 'NotAllowedError':
    case 'SecurityError':
      return 'Camera and microphone access is blocked. You can still join to watch and listen; ' +
        'allow access in the address bar and reload to take part.';
    case 'NotFoundError':
    case 'OverconstrainedError':
      return 'No camera or microphone was found. You can still join to watch and listen.';
    case 'NotReadableError':
    case 'AbortError':
      return 'Your camera or microphone is in use by another application.';
    case 'TypeError':
      if (!window.isSecureContext) {
        return 'This page is not a secure context (https), so the browser offers no camera or microphone.';
      }
      return `Cannot use the camera or microphone: ${err.message}`;
    default:
      return `Cannot use the camera or microphone${err && err.message ? `: ${err.message}` : ''}.`;
  }
}

function constraints(kind, deviceId) {
  if (kind === 'video') {
    // A mesh call encodes the camera once per peer: 640x360 keeps six-person rooms within a
    // laptop's means and gets the first frame out fast.
    const video = { width: { ideal: 640 }, height: { ideal: 360 }, frameRate: { ideal: 30 } };
    if (deviceId) video.deviceId = { exact: deviceId };
    return video;
  }
  const audio = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };
  if (deviceId) audio.deviceId = { exact: deviceId };
  return audio;
}

/**
 * Captures camera and microphone, falling back to whichever one works.
 * Resolves to { stream, error } — `error` explains what is missing, `stream` holds what worked.
 */
export async function openCamera({ videoId, audioId } = {}) {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    return { stream: new MediaStream(), error: describeMediaError({ name: 'TypeError', message: 'no mediaDevices' }) };
  }
  try {
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: constraints('audio', audioId),
      video: constraints('video', videoId),
    });
    return { stream, error: null };
  } catch (both) {
    if (both.name === 'NotAllowedError' || both.name === 'SecurityError') {
      return { stream: new MediaStream(), error: describeMediaError(both) };
    }
    // One of the two may still work (a laptop without a camera, a desk without a mic).
    const stream = new MediaStream();
    const missing = [];
    for (const kind of ['audio', 'video']) {
      try {
        const one = await navigator.mediaDevices.getUserMedia({
          [kind]: constraints(kind, kind === 'video' ? videoId : audioId),
        });
        one.getTracks().forEach((t) => stream.addTrack(t));
      } catch {
        missing.push(kind === 'video' ? 'camera' : 'microphone');
      }
    }
    const error = missing.length === 2
      ? describeMediaError(both)
      : `No ${missing[0]} available; joining with your ${missing[0] === 'camera' ? 'microphone' : 'camera'} only.`;
    return { stream, error };
  }
}

export async function openTrack(kind, deviceId) {
  const stream = await navigator.mediaDevices.getUserMedia({ [kind]: constraints(kind, deviceId) });
  return kind === 'video' ? stream.getVideoTracks()[0] : stream.getAudioTracks()[0];
}

export async function listDevices() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return { video: [], audio: [] };
  const devices = await navigator.mediaDevices.enumerateDevices();
  const pick = (kind, word) => devices
    .filter((d) => d.kind === kind && d.deviceId)
    .map((d, i) => ({ id: d.deviceId, label: d.label || `${word} ${i + 1}` }));
  return { video: pick('videoinput', 'Camera'), audio: pick('audioinput', 'Microphone') };
}

/** A screen share, sharp: up to 1080p at 15 frames a second, and marked as detail so that a
 *  short link or a busy CPU costs frames, never the resolution text needs to be read. */
export async function openScreen() {
  const stream = await navigator.mediaDevices.getDisplayMedia({
    video: { width: { ideal: 1920 }, height: { ideal: 1080 }, frameRate: { ideal: 15, max: 30 } },
    audio: false,
  });
  for (const track of stream.getVideoTracks()) track.contentHint = 'detail';
  return stream;
}

/** Keeps a screen share's sender at full resolution when its link or CPU is short: the encoder
 *  drops frames instead (Chrome honours it; other browsers ignore it). */
export async function keepSharp(sender) {
  const params = sender.getParameters();
  params.degradationPreference = 'maintain-resolution';
  await sender.setParameters(params).catch(() => {});
}
