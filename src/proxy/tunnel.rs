//! WebSocket tunnels in the glue: the upstream connection of an upgrade request reads
//! with the route's idle timeout instead of the pool's; once the upstream answers 101
//! the client side does too, the subprotocol answer is fixed up for a token taken from
//! `Sec-WebSocket-Protocol`, and every message that passes re-arms the timeout with
//! what is left of the route's lifetime.

use pingora::prelude::*;
use pingora::ErrorType;

use super::{Ctx, Gateway};
use crate::websocket::Tunnel;

impl Gateway {
    /// The upstream read timeout for an upgrade request: the route's idle timeout.
    pub(super) fn upgrade_peer(session: &Session, ctx: &Ctx, peer: &mut HttpPeer) {
        if !session.is_upgrade_req() {
            return;
        }
        if let Some(route) = ctx.route() {
            peer.options.read_timeout = Some(ctx.snapshot.routes.get(route).websocket.idle);
        }
    }

    /// On the upstream's 101: answers the token subprotocol marker if needed and opens
    /// the tunnel's clock.
    pub(super) fn open_tunnel(session: &mut Session, ctx: &mut Ctx, resp: &mut ResponseHeader) -> Result<()> {
        if resp.status != 101 || !session.is_upgrade_req() {
            return Ok(());
        }
        let Some(route) = ctx.admitted().map(|a| a.route) else { return Ok(()) };
        let route = ctx.snapshot.routes.get(route);
        let sources = route.token_sources.as_ref().unwrap_or(ctx.snapshot.auth.sources());
        sources.answer_subprotocol(session.req_header(), resp)?;
        let tunnel = Tunnel::open(route.websocket);
        ctx.tunnel = Some(tunnel);
        Self::rearm(session, ctx)
    }

    /// Re-arms the client read timeout as a message passes; ends the tunnel once its
    /// lifetime is over.
    pub(super) fn rearm(session: &mut Session, ctx: &Ctx) -> Result<()> {
        let Some(tunnel) = &ctx.tunnel else { return Ok(()) };
        match tunnel.next_read_timeout() {
            Ok(timeout) => {
                session.set_read_timeout(Some(timeout));
                Ok(())
            }
            Err(closed) => Error::e_explain(ErrorType::ReadTimedout, closed.reason()),
        }
    }
}
