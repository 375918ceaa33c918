//! `switchyard epp`: the fleet tier's router as a Gateway API Inference
//! Extension endpoint picker. Envoy's ext_proc filter streams each HTTP
//! request to [`Epp::process`]; the picker reads the body (buffered or
//! FULL_DUPLEX_STREAMED), prices it on every endpoint of the pool, and
//! answers with the destination list in the `x-gateway-destination-endpoint`
//! header and the `envoy.lb` dynamic metadata, or an immediate 503/429/4xx.
//! On the response path it reads `x-gateway-destination-endpoint-served` and
//! the usage, so in-flight accounting and the output-length estimate follow
//! what really happened.
//!
//! Protocol: GAIE's endpoint-picker protocol v1 (`docs/proposals/004-endpoint-picker-protocol`).
//! In FULL_DUPLEX_STREAMED mode the picker holds the request headers until
//! the body ends, then sends the headers response and the body back as
//! `streamed_response` chunks (Envoy forwards only what the processor sends).

pub mod pick;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{
    header_value_option::HeaderAppendAction, HeaderValue, HeaderValueOption,
};
use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::processing_mode::BodySendMode;
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    body_mutation::Mutation,
    external_processor_server::{ExternalProcessor, ExternalProcessorServer},
    processing_request::Request as Req,
    processing_response::Response as Resp,
    BodyMutation, BodyResponse, CommonResponse, HeaderMutation, HeadersResponse, HttpHeaders,
    ImmediateResponse, ProcessingRequest, ProcessingResponse, StreamedBodyResponse,
    TrailersResponse,
};
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use metrics::counter;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::fleet::LiveFleet;
use crate::metrics as m;
use crate::tier::node::DEVICE_HEADER;
use crate::ServerError;
use pick::{Pick, Refusal, RequestKind};

/// Header and `envoy.lb` metadata key of the destination list.
pub const DESTINATION: &str = "x-gateway-destination-endpoint";
/// `envoy.lb` metadata key of the endpoint that served.
pub const SERVED: &str = "x-gateway-destination-endpoint-served";
/// Metadata namespace of the destination and served keys.
pub const LB_NAMESPACE: &str = "envoy.lb";
/// Metadata namespace of the subset hint.
pub const SUBSET_NAMESPACE: &str = "envoy.lb.subset_hint";
/// Key of the subset hint (a list of `ip:port`, or one comma-joined string).
pub const SUBSET_KEY: &str = "x-gateway-destination-endpoint-subset";
/// Envoy's recommended largest streamed body chunk is 64 KiB; GAIE sends 62 000 bytes.
const BODY_CHUNK: usize = 62_000;
/// Request bodies larger than this are refused with 413.
const MAX_BODY_BYTES: usize = 16 << 20;
/// Response bytes kept for reading the usage (the tail of a stream).
const RESPONSE_TAIL_BYTES: usize = 64 << 10;
const FULL_DUPLEX: i32 = BodySendMode::FullDuplexStreamed as i32;

/// The ext_proc service.
#[derive(Clone)]
pub struct Epp {
    fleet: Arc<LiveFleet>,
}

impl Epp {
    /// A picker over `fleet`'s remote endpoints.
    pub fn new(fleet: Arc<LiveFleet>) -> Self {
        Self { fleet }
    }
}

/// Where `switchyard epp` listens.
#[derive(Debug, Clone)]
pub struct EppAddrs {
    /// ext_proc gRPC.
    pub grpc: SocketAddr,
    /// gRPC health (`liveness`, `readiness`, the ext_proc service).
    pub health: SocketAddr,
    /// HTTP: Prometheus `/metrics`, `/ready` and the admin routes (`/admin/route`, ...).
    pub metrics: SocketAddr,
}

/// Runs the endpoint picker until `shutdown` resolves.
pub async fn run(
    fleet: Arc<LiveFleet>,
    addrs: EppAddrs,
    monitoring: crate::state::SharedState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let io = |what: &str, addr: SocketAddr, e: std::io::Error| {
        ServerError::Io(format!("{what} on {addr}: {e}"))
    };
    let grpc = tokio::net::TcpListener::bind(addrs.grpc)
        .await
        .map_err(|e| io("ext_proc", addrs.grpc, e))?;
    let health = tokio::net::TcpListener::bind(addrs.health)
        .await
        .map_err(|e| io("health", addrs.health, e))?;
    let prom = tokio::net::TcpListener::bind(addrs.metrics)
        .await
        .map_err(|e| io("metrics", addrs.metrics, e))?;
    let local =
        |l: &tokio::net::TcpListener| l.local_addr().map_err(|e| ServerError::Io(e.to_string()));
    println!(
        "switchyard epp listening on grpc={} health={} metrics={}",
        local(&grpc)?,
        local(&health)?,
        local(&prom)?
    );

    let (reporter, health_service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("liveness", tonic_health::ServingStatus::Serving)
        .await;
    let watched = fleet.clone();
    let readiness = tokio::spawn(async move {
        // Ready while some endpoint takes work: until then Envoy's health check keeps traffic away.
        let mut last = None;
        loop {
            let ready = watched.ready();
            if last != Some(ready) {
                let status = if ready {
                    tonic_health::ServingStatus::Serving
                } else {
                    tonic_health::ServingStatus::NotServing
                };
                reporter.set_service_status("readiness", status).await;
                reporter
                    .set_service_status(
                        <ExternalProcessorServer<Epp> as tonic::server::NamedService>::NAME,
                        status,
                    )
                    .await;
                // The empty name is the server as a whole (grpc_health_probe's default).
                reporter.set_service_status("", status).await;
                last = Some(ready);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let stopped = |tx: &tokio::sync::broadcast::Sender<()>| {
        let mut rx = tx.subscribe();
        async move {
            let _ = rx.recv().await;
        }
    };
    // Health on the ext_proc port too: the gateway's active health check of
    // the picker's cluster asks the port it sends requests to.
    let ext_proc = tonic::transport::Server::builder()
        .add_service(health_service.clone())
        .add_service(ExternalProcessorServer::new(Epp::new(fleet.clone())))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(grpc),
            stopped(&stop_tx),
        );
    let health_server = tonic::transport::Server::builder()
        .add_service(health_service)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(health),
            stopped(&stop_tx),
        );
    let metrics_app = crate::http::monitoring_app(monitoring);
    let metrics_server = axum::serve(prom, metrics_app).with_graceful_shutdown(stopped(&stop_tx));
    let trigger = stop_tx.clone();
    tokio::spawn(async move {
        shutdown.await;
        let _ = trigger.send(());
    });
    let (a, b, c) = tokio::join!(ext_proc, health_server, metrics_server);
    readiness.abort();
    a.map_err(|e| ServerError::Io(format!("ext_proc server: {e}")))?;
    b.map_err(|e| ServerError::Io(format!("health server: {e}")))?;
    c.map_err(|e| ServerError::Io(format!("metrics server: {e}")))?;
    Ok(())
}

/// One ext_proc stream: one HTTP request and its response.
struct Exchange {
    fleet: Arc<LiveFleet>,
    request_mode: i32,
    response_mode: i32,
    kind: RequestKind,
    body: Vec<u8>,
    subset: Option<Vec<String>>,
    pick: Option<Pick>,
    response_tail: Vec<u8>,
}

impl Exchange {
    fn new(fleet: Arc<LiveFleet>) -> Self {
        Self {
            fleet,
            request_mode: 0,
            response_mode: 0,
            kind: RequestKind::Other,
            body: Vec::new(),
            subset: None,
            pick: None,
            response_tail: Vec::new(),
        }
    }

    /// Answers one message; `Err` carries an immediate response that ends the exchange.
    fn handle(
        &mut self,
        msg: ProcessingRequest,
        out: &mut Vec<ProcessingResponse>,
    ) -> Result<(), Box<ProcessingResponse>> {
        if let Some(pc) = &msg.protocol_config {
            // Sent on the first message only.
            self.request_mode = pc.request_body_mode;
            self.response_mode = pc.response_body_mode;
        }
        if let Some(md) = &msg.metadata_context {
            if self.subset.is_none() {
                self.subset = subset_hint(&md.filter_metadata);
            }
        }
        match msg.request {
            Some(Req::RequestHeaders(h)) => {
                self.kind = RequestKind::of_path(&header(&h, ":path").unwrap_or_default());
                if h.end_of_stream {
                    let pick = self.pick()?;
                    out.push(routed(
                        Resp::RequestHeaders(HeadersResponse {
                            response: Some(routing(&pick)),
                        }),
                        &pick,
                    ));
                    self.pick = Some(pick);
                } else if self.request_mode != FULL_DUPLEX {
                    // Buffered: Envoy waits for this before sending the body.
                    out.push(reply(Resp::RequestHeaders(HeadersResponse::default())));
                }
                // Full duplex: the headers answer waits for the whole body.
            }
            Some(Req::RequestBody(b)) => {
                if self.body.len() + b.body.len() > MAX_BODY_BYTES {
                    return Err(Box::new(immediate(
                        413,
                        &Refusal::Invalid(crate::api::ApiError::invalid_request(
                            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                            "request body too large",
                        )),
                    )));
                }
                self.body.extend_from_slice(&b.body);
                if b.end_of_stream && self.pick.is_none() {
                    let pick = self.pick()?;
                    if self.request_mode == FULL_DUPLEX {
                        out.push(routed(
                            Resp::RequestHeaders(HeadersResponse {
                                response: Some(routing(&pick)),
                            }),
                            &pick,
                        ));
                        let body = std::mem::take(&mut self.body);
                        let chunks: Vec<&[u8]> = if body.is_empty() {
                            vec![&[]]
                        } else {
                            body.chunks(BODY_CHUNK).collect()
                        };
                        let n = chunks.len();
                        for (i, c) in chunks.into_iter().enumerate() {
                            out.push(reply(Resp::RequestBody(BodyResponse {
                                response: Some(streamed(c, i + 1 == n)),
                            })));
                        }
                    } else {
                        // Buffered: header mutations in a body response apply.
                        out.push(routed(
                            Resp::RequestBody(BodyResponse {
                                response: Some(routing(&pick)),
                            }),
                            &pick,
                        ));
                    }
                    self.pick = Some(pick);
                }
            }
            Some(Req::RequestTrailers(_)) => {
                out.push(reply(Resp::RequestTrailers(TrailersResponse::default())));
            }
            Some(Req::ResponseHeaders(h)) => {
                let served = msg
                    .metadata_context
                    .as_ref()
                    .and_then(|md| md.filter_metadata.get(LB_NAMESPACE))
                    .and_then(|s| s.fields.get(SERVED))
                    .and_then(string_of)
                    .or_else(|| header(&h, SERVED));
                if let (Some(pick), Some(served)) = (&mut self.pick, served) {
                    pick.served_by(&self.fleet, &served);
                }
                if h.end_of_stream {
                    self.finish();
                }
                out.push(reply(Resp::ResponseHeaders(HeadersResponse::default())));
            }
            Some(Req::ResponseBody(b)) => {
                self.response_tail.extend_from_slice(&b.body);
                if self.response_tail.len() > 2 * RESPONSE_TAIL_BYTES {
                    let cut = self.response_tail.len() - RESPONSE_TAIL_BYTES;
                    self.response_tail.drain(..cut);
                }
                if b.end_of_stream {
                    self.finish();
                }
                let common = if self.response_mode == FULL_DUPLEX {
                    streamed(&b.body, b.end_of_stream)
                } else {
                    CommonResponse::default()
                };
                out.push(reply(Resp::ResponseBody(BodyResponse {
                    response: Some(common),
                })));
            }
            Some(Req::ResponseTrailers(_)) => {
                self.finish();
                out.push(reply(Resp::ResponseTrailers(TrailersResponse::default())));
            }
            None => {}
        }
        Ok(())
    }

    fn pick(&mut self) -> Result<Pick, Box<ProcessingResponse>> {
        let result = pick::pick(&self.fleet, self.kind, &self.body, self.subset.as_deref());
        let outcome = match &result {
            Ok(_) => "picked",
            Err(Refusal::Invalid(_)) => "invalid",
            Err(Refusal::NoEndpoint(_)) => "no_endpoint",
            Err(Refusal::Shed) => "shed",
        };
        counter!(m::EPP_DECISIONS, "outcome" => outcome).increment(1);
        result.map_err(|r| {
            tracing::debug!(status = r.status().as_u16(), "request refused");
            Box::new(immediate(r.status().as_u16(), &r))
        })
    }

    /// The response ended: the output length is learned and the accounting released.
    fn finish(&mut self) {
        if let Some(mut pick) = self.pick.take() {
            match pick::completion_tokens(&self.response_tail) {
                Some(n) => pick.finished(&self.fleet, n),
                None => drop(pick),
            }
        }
    }
}

#[tonic::async_trait]
impl ExternalProcessor for Epp {
    type ProcessStream = ReceiverStream<Result<ProcessingResponse, Status>>;

    async fn process(
        &self,
        request: Request<Streaming<ProcessingRequest>>,
    ) -> Result<Response<Self::ProcessStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let mut exchange = Exchange::new(self.fleet.clone());
        tokio::spawn(async move {
            // An error here is the normal end: Envoy resets the stream once it is done.
            while let Some(Ok(msg)) = inbound.next().await {
                let mut out = Vec::new();
                let result = exchange.handle(msg, &mut out);
                for r in out {
                    if tx.send(Ok(r)).await.is_err() {
                        return;
                    }
                }
                if let Err(refusal) = result {
                    let _ = tx.send(Ok(*refusal)).await;
                    return;
                }
            }
            // A client that left mid-request: the pick's drop releases its accounting.
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// A request header's value (`raw_value` first, as Envoy sends it).
fn header(h: &HttpHeaders, name: &str) -> Option<String> {
    let map = h.headers.as_ref()?;
    map.headers
        .iter()
        .find(|v| v.key.eq_ignore_ascii_case(name))
        .map(|v| {
            if v.raw_value.is_empty() {
                v.value.clone()
            } else {
                String::from_utf8_lossy(&v.raw_value).into_owned()
            }
        })
}

fn string_of(v: &Value) -> Option<String> {
    match &v.kind {
        Some(Kind::StringValue(s)) => Some(s.clone()),
        _ => None,
    }
}

/// The subset hint, if the gateway sent one: a list of `ip:port` or one comma-joined string.
fn subset_hint(md: &HashMap<String, Struct>) -> Option<Vec<String>> {
    let v = md.get(SUBSET_NAMESPACE)?.fields.get(SUBSET_KEY)?;
    let items: Vec<String> = match &v.kind {
        Some(Kind::ListValue(l)) => l.values.iter().filter_map(string_of).collect(),
        Some(Kind::StringValue(s)) => s.split(',').map(str::to_string).collect(),
        _ => Vec::new(),
    };
    Some(
        items
            .into_iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
    )
}

fn set_header(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.into(),
            raw_value: value.as_bytes().to_vec(),
            ..Default::default()
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

/// Header mutations that send the request to `pick`'s destinations.
fn routing(pick: &Pick) -> CommonResponse {
    let mut set_headers = vec![set_header(DESTINATION, &pick.destinations.join(","))];
    if let Some(d) = &pick.node_device {
        set_headers.push(set_header(DEVICE_HEADER, d));
    }
    CommonResponse {
        header_mutation: Some(HeaderMutation {
            set_headers,
            remove_headers: Vec::new(),
        }),
        clear_route_cache: true,
        ..Default::default()
    }
}

fn streamed(body: &[u8], end_of_stream: bool) -> CommonResponse {
    CommonResponse {
        body_mutation: Some(BodyMutation {
            mutation: Some(Mutation::StreamedResponse(StreamedBodyResponse {
                body: body.to_vec(),
                end_of_stream,
                ..Default::default()
            })),
        }),
        ..Default::default()
    }
}

fn reply(r: Resp) -> ProcessingResponse {
    ProcessingResponse {
        response: Some(r),
        ..Default::default()
    }
}

/// A response carrying the destination in `envoy.lb` metadata too.
fn routed(r: Resp, pick: &Pick) -> ProcessingResponse {
    let dest = Value {
        kind: Some(Kind::StringValue(pick.destinations.join(","))),
    };
    let lb = Struct {
        fields: HashMap::from([(DESTINATION.to_string(), dest)]),
    };
    let md = Struct {
        fields: HashMap::from([(
            LB_NAMESPACE.to_string(),
            Value {
                kind: Some(Kind::StructValue(lb)),
            },
        )]),
    };
    ProcessingResponse {
        response: Some(r),
        dynamic_metadata: Some(md),
        ..Default::default()
    }
}

fn immediate(status: u16, refusal: &Refusal) -> ProcessingResponse {
    reply(Resp::ImmediateResponse(ImmediateResponse {
        status: Some(HttpStatus {
            code: i32::from(status),
        }),
        headers: Some(HeaderMutation {
            set_headers: vec![set_header("content-type", "application/json")],
            remove_headers: Vec::new(),
        }),
        body: refusal.body().to_string().into_bytes(),
        details: format!("switchyard_epp_{}", status),
        ..Default::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::ListValue;

    fn s(v: &str) -> Value {
        Value {
            kind: Some(Kind::StringValue(v.into())),
        }
    }

    #[test]
    fn the_subset_hint_is_a_list_or_a_comma_string() {
        let list = Value {
            kind: Some(Kind::ListValue(ListValue {
                values: vec![s("10.0.0.1:8000"), s("10.0.0.2:8000")],
            })),
        };
        let md = |v: Value| {
            HashMap::from([(
                SUBSET_NAMESPACE.to_string(),
                Struct {
                    fields: HashMap::from([(SUBSET_KEY.to_string(), v)]),
                },
            )])
        };
        let want = vec!["10.0.0.1:8000".to_string(), "10.0.0.2:8000".to_string()];
        assert_eq!(subset_hint(&md(list)), Some(want.clone()));
        assert_eq!(
            subset_hint(&md(s("10.0.0.1:8000, 10.0.0.2:8000"))),
            Some(want)
        );
        assert_eq!(
            subset_hint(&md(s(""))),
            Some(Vec::new()),
            "present but empty"
        );
        assert_eq!(subset_hint(&HashMap::new()), None, "absent");
    }
}
