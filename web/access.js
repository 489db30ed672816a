// Access tokens in the page: read from the invitation link (`#token=…`, kept out of server logs
// and Referer headers, or LiveKit's `?access_token=…`), shown to the person in words before it
// goes to the server, which alone decides (docs/protocol.md, "Access tokens").

const STORED = 'huddle.token';

/**
 * The invitation's token: from the link, which is then taken out of the address bar (so a
 * host copying the URL does not hand out their own invitation) and kept for this tab's reloads;
 * or the one this tab kept, if it is for `room`.
 */
export function tokenFromLink(room, loc = location) {
  const fragment = new URLSearchParams(loc.hash.replace(/^#/, ''));
  const query = new URLSearchParams(loc.search);
  const token = fragment.get('token') || query.get('access_token');
  if (token) {
    sessionStorage.setItem(STORED, token);
    query.delete('access_token');
    const search = query.toString();
    history.replaceState(null, '', `${loc.pathname}${search ? `?${search}` : ''}`);
    return token;
  }
  const kept = sessionStorage.getItem(STORED);
  const keptRoom = kept && readClaims(kept)?.video?.room;
  return kept && (!room || !keptRoom || keptRoom.toLowerCase() === room.toLowerCase()) ? kept : null;
}

/** The token's claims as the page may read them (the signature is the server's business). */
export function readClaims(token) {
  try {
    const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const json = decodeURIComponent(
      [...atob(payload)].map((c) => `%${c.charCodeAt(0).toString(16).padStart(2, '0')}`).join(''),
    );
    return JSON.parse(json);
  } catch {
    return null;
  }
}

/** Why this token cannot work here, in words, before trying; null when it may. */
export function problemWith(claims, room, nowSeconds = Date.now() / 1000) {
  if (!claims) return 'The invitation link is damaged: its access token cannot be read. Ask for a new link.';
  if (claims.exp && claims.exp + 60 < nowSeconds) {
    return `This invitation expired ${new Date(claims.exp * 1000).toLocaleString()}. Ask for a new link.`;
  }
  const tokenRoom = claims.video?.room;
  // Room names fold case, as the server compares them.
  if (room && tokenRoom && tokenRoom.toLowerCase() !== room.toLowerCase()) {
    return `This invitation is for the room “${tokenRoom}”, not “${room}”.`;
  }
  return null;
}

/** What the server's refusal means for the person, for the message screen. */
export function describeRefusal(code, message) {
  switch (code) {
    case 'unauthorized':
      return {
        title: 'This room needs an invitation',
        text: `${capitalize(message)}. Open the invitation link you were given, or ask the host for one.`,
      };
    case 'forbidden':
      return { title: 'You cannot join this room', text: `${capitalize(message)}.` };
    case 'room-locked':
      return { title: 'This room is locked', text: 'The host has locked the room: no one else may join for now.' };
    default:
      return null;
  }
}

function capitalize(s) {
  return s ? s[0].toUpperCase() + s.slice(1) : s;
}

const SOURCES = ['camera', 'microphone', 'screen_share', 'screen_share_audio'];

/**
 * What the token will let this page do, as the server reads the grant (unset permissions
 * allowed, LiveKit's rule), so the page asks only for what it may send. The welcome then says
 * for certain.
 */
export function permissionsFromClaims(claims) {
  const v = claims?.video || {};
  const listed = Array.isArray(v.canPublishSources) && v.canPublishSources.length ? v.canPublishSources : SOURCES;
  return {
    sources: v.canPublish === false ? [] : SOURCES.filter((s) => listed.includes(s)),
    subscribe: v.canSubscribe !== false,
    publishData: v.canPublishData !== false,
    admin: v.roomAdmin === true,
    hidden: v.hidden === true,
  };
}
