// The RTCPeerConnection configuration both pages build from the server's ICE servers, with the
// diagnostics switches `?ice=relay` (relay candidates only) and `?turn=udp|tcp|tls` (one way of
// reaching TURN): together they show whether a network lets that one way through.

export function rtcConfig(servers, params) {
  return {
    iceServers: onlyTurnTransport(servers || [], params.get('turn')),
    iceTransportPolicy: params.get('ice') === 'relay' ? 'relay' : 'all',
    bundlePolicy: 'max-bundle',
  };
}

function onlyTurnTransport(servers, transport) {
  if (!transport) return servers;
  const keep = (url) => {
    if (!/^turns?:/.test(url)) return true;
    const tls = url.startsWith('turns:');
    const tcp = /transport=tcp/.test(url);
    return transport === 'tls' ? tls : transport === 'tcp' ? tcp && !tls : !tcp && !tls;
  };
  return servers.map((s) => ({ ...s, urls: s.urls.filter(keep) })).filter((s) => s.urls.length);
}
