//! REST methods of recording, under `/rest-api` as WCS has them: `/stream/startRecording`,
//! `/stream/stopRecording`, `/recorder/startup`, `/recorder/terminate`, `/recorder/find_all`.
//!
//! Bodies are `{"mediaSessionId": "..."}` (startup adds `config.fileTemplate`). Answers: 200 with
//! `{"fileName": ...}` (the file, as `recordName` and `/client/records/<fileName>` name it); 404
//! when no published stream has that id (start) or it is not being recorded (stop, terminate);
//! 500 with `{"error": ...}` when the file cannot be created (unwritable or missing records
//! directory, full disk): the stream itself goes on. A body that is not JSON, lacks the id, or
//! asks for `rotation` (not supported) gets 400. `find_all` answers 200 with
//! `[{"fileName", "mediaSessionId", "streamName", "startTime"}]`, `[]` when none.

use std::sync::Arc;

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use sluice_actors::error::RecordError;
use sluice_actors::Core;

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
struct RecordBody {
    media_session_id: String,
    #[serde(default)]
    config: Option<RecorderConfig>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
struct RecorderConfig {
    file_template: Option<String>,
    rotation: Option<String>,
}

fn error(status: actix_web::http::StatusCode, msg: String) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": msg }))
}

/// The one place a recording error becomes an HTTP status.
fn record_error(e: &RecordError) -> HttpResponse {
    use actix_web::http::StatusCode as S;
    let status = match e {
        RecordError::StreamNotFound(_) | RecordError::NotRecording(_) => S::NOT_FOUND,
        RecordError::BadConfig(_) => S::BAD_REQUEST,
        RecordError::Directory { .. }
        | RecordError::Create { .. }
        | RecordError::Write { .. }
        | RecordError::Mux { .. } => S::INTERNAL_SERVER_ERROR,
    };
    error(status, e.to_string())
}

fn parse(body: &[u8]) -> Result<RecordBody, HttpResponse> {
    serde_json::from_slice(body).map_err(|e| {
        error(
            actix_web::http::StatusCode::BAD_REQUEST,
            format!("invalid body, want {{\"mediaSessionId\": ...}}: {e}"),
        )
    })
}

fn started(core: &Core, b: &RecordBody, template: Option<&str>) -> HttpResponse {
    let res =
        core.recordings.target(&b.media_session_id).and_then(|t| core.recordings.start(t, template, None));
    match res {
        Ok(name) => HttpResponse::Ok().json(json!({ "fileName": name })),
        Err(e) => record_error(&e),
    }
}

async fn stopped(core: &Core, id: &str) -> HttpResponse {
    match core.recordings.stop(id) {
        Ok(done) => HttpResponse::Ok().json(json!({ "fileName": done.await })),
        Err(e) => record_error(&e),
    }
}

async fn start_recording(core: web::Data<Arc<Core>>, body: web::Bytes) -> HttpResponse {
    match parse(&body) {
        Ok(b) => started(&core, &b, None),
        Err(r) => r,
    }
}

async fn stop_recording(core: web::Data<Arc<Core>>, body: web::Bytes) -> HttpResponse {
    match parse(&body) {
        Ok(b) => stopped(&core, &b.media_session_id).await,
        Err(r) => r,
    }
}

/// `/recorder/startup`: (re)start a stream's recording with new settings.
async fn startup(core: web::Data<Arc<Core>>, body: web::Bytes) -> HttpResponse {
    let b = match parse(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let config = b.config.as_ref();
    if let Some(r) = config.and_then(|c| c.rotation.as_deref()).filter(|r| !r.is_empty() && *r != "disabled")
    {
        return record_error(&RecordError::BadConfig(format!("rotation {r:?} is not supported")));
    }
    if let Err(e) = core.recordings.target(&b.media_session_id) {
        return record_error(&e);
    }
    if let Ok(done) = core.recordings.stop(&b.media_session_id) {
        done.await;
    }
    let template = config.and_then(|c| c.file_template.clone()).filter(|t| !t.is_empty());
    started(&core, &b, template.as_deref())
}

async fn find_all(core: web::Data<Arc<Core>>) -> HttpResponse {
    HttpResponse::Ok().json(core.recordings.list())
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    use crate::rest::method;
    cfg.service(method("/stream/startRecording", start_recording))
        .service(method("/stream/stopRecording", stop_recording))
        .service(method("/recorder/startup", startup))
        .service(method("/recorder/terminate", stop_recording))
        .service(method("/recorder/find_all", find_all));
}
