//! Refusals of gRPC calls, written the gRPC way: HTTP 200 with the status in
//! `grpc-status` and the reason in `grpc-message`, as a trailers-only response (one
//! header block that ends the stream), so a gRPC client reports the status instead of
//! a protocol error. The codes come from the refusal table (`Reject::grpc_status`).

use pingora::prelude::*;

use super::{Ctx, Gateway};
use crate::reject::Reject;

impl Gateway {
    /// Writes `reject` as a trailers-only gRPC response.
    pub(super) async fn respond_grpc(&self, session: &mut Session, ctx: &Ctx, reject: Reject) -> Result<()> {
        let mut resp = ResponseHeader::build(200, Some(5))?;
        resp.insert_header("content-type", "application/grpc")?;
        resp.insert_header("grpc-status", reject.grpc_status().code())?;
        // Reasons are snake_case ASCII, so they need no percent-encoding.
        resp.insert_header("grpc-message", reject.reason())?;
        ctx.snapshot.headers.request_id.set_response(&mut resp, ctx.request_id.header_value())?;
        if let Some(after) = reject.retry_after() {
            resp.insert_header("retry-after", after.as_secs())?;
        }
        if session.req_header().version < http::Version::HTTP_2 {
            // An HTTP/1 client learns the (empty) body's end from the length.
            resp.insert_header("content-length", 0)?;
        }
        session.set_keepalive(None);
        session.write_response_header(Box::new(resp), true).await
    }
}
