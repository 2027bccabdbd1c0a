//! Recording, as WCS has it: `/stream/startRecording`, `/stream/stopRecording`,
//! `/recorder/startup`, `/recorder/terminate`, `/recorder/find_all`, through
//! [`Recordings`](sluice_actors::recorder::Recordings).
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

use super::{method, ApiResult, Body};

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

fn started(core: &Core, id: &str, template: Option<&str>) -> ApiResult {
    let target = core.recordings.target(id)?;
    let name = core.recordings.start(target, template, None)?;
    Ok(HttpResponse::Ok().json(json!({ "fileName": name })))
}

async fn start_recording(core: web::Data<Arc<Core>>, Body(b): Body<RecordBody>) -> ApiResult {
    started(&core, &b.media_session_id, None)
}

/// `/stream/stopRecording` and `/recorder/terminate`: answers once the file is complete.
async fn stop_recording(core: web::Data<Arc<Core>>, Body(b): Body<RecordBody>) -> ApiResult {
    let done = core.recordings.stop(&b.media_session_id)?;
    Ok(HttpResponse::Ok().json(json!({ "fileName": done.await })))
}

/// `/recorder/startup`: (re)start a stream's recording with new settings.
async fn startup(core: web::Data<Arc<Core>>, Body(b): Body<RecordBody>) -> ApiResult {
    let config = b.config.as_ref();
    if let Some(r) = config.and_then(|c| c.rotation.as_deref()).filter(|r| !r.is_empty() && *r != "disabled")
    {
        return Err(RecordError::BadConfig(format!("rotation {r:?} is not supported")).into());
    }
    core.recordings.target(&b.media_session_id)?;
    if let Ok(done) = core.recordings.stop(&b.media_session_id) {
        done.await;
    }
    let template = config.and_then(|c| c.file_template.as_deref()).filter(|t| !t.is_empty());
    started(&core, &b.media_session_id, template)
}

async fn find_all(core: web::Data<Arc<Core>>) -> ApiResult {
    Ok(HttpResponse::Ok().json(core.recordings.list()))
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(method("/stream/startRecording", start_recording))
        .service(method("/stream/stopRecording", stop_recording))
        .service(method("/recorder/startup", startup))
        .service(method("/recorder/terminate", stop_recording))
        .service(method("/recorder/find_all", find_all));
}
