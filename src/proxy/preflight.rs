//! CORS in the glue: preflights answered before admission (no token, no upstream,
//! audited like any request), and the route's CORS headers on every other answer,
//! refusals included, so a browser can read why it was refused.

use pingora::prelude::*;

use super::{Admission, Ctx, Gateway};
use crate::admission::{self, Refused};
use crate::reject::Reject;
use crate::routing::RouteId;

impl Gateway {
    /// The route of a CORS preflight, when the route handles CORS.
    pub(super) fn preflight_route(session: &Session, ctx: &Ctx) -> Option<RouteId> {
        let head = session.req_header();
        if !crate::cors::is_preflight(head) {
            return None;
        }
        let route = admission::route_of(&ctx.snapshot, head, &super::connection(session))?;
        ctx.snapshot.routes.get(route).cors.is_some().then_some(route)
    }

    /// Answers a preflight: 204 with the route's CORS headers, or 403 without any.
    pub(super) async fn answer_preflight(&self, session: &mut Session, ctx: &mut Ctx, route: RouteId) -> Result<()> {
        let snap = std::sync::Arc::clone(&ctx.snapshot);
        let Some(cors) = snap.routes.get(route).cors.as_deref() else { return Ok(()) };
        if !cors.preflight_allowed(session.req_header()) {
            let refused = Refused { route: Some(route), ..Refused::early(Reject::CorsNotAllowed) };
            ctx.admission = Admission::Refused(Box::new(refused));
            return self.respond(session, ctx, Reject::CorsNotAllowed).await;
        }
        ctx.admission = Admission::Preflight(route);
        let mut resp = ResponseHeader::build(204, Some(8))?;
        cors.set_preflight_headers(session.req_header(), &mut resp)?;
        snap.headers.request_id.set_response(&mut resp, ctx.request_id.header_value())?;
        session.write_response_header(Box::new(resp), true).await
    }

    /// Sets the route's CORS headers on an answer (none for a refused preflight).
    pub(super) fn cors_headers(session: &Session, ctx: &Ctx, resp: &mut ResponseHeader) -> Result<()> {
        if ctx.reject() == Some(Reject::CorsNotAllowed) {
            return Ok(());
        }
        let Some(cors) = ctx.route().and_then(|r| ctx.snapshot.routes.get(r).cors.as_deref()) else {
            return Ok(());
        };
        cors.set_response_headers(session.req_header(), resp)
    }
}
