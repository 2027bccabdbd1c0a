//! `/cluster/nodes`, `/cluster/node`, `/cluster/streams`: the cluster as this node sees it
//! (see [`sluice_actors::cluster`]), for a load balancer, a page or an operator.
//!
//! - `nodes`: every live node's record (addresses, viewers, published and pulled streams, CPU,
//!   media bandwidth), as of the last second.
//! - `node?streamName=cam1` (or `{"streamName"}`): the least loaded node for a new viewer,
//!   `{"node": {...}, "origin": "<node id>" | null}`; 404 when no node is known.
//! - `streams`: every stream published in the cluster, `[{"streamName", "node"}]` (a
//!   cluster-wide `find_all`); 502 when Redis cannot be read.
//! - `terminate {"streamName"}`: the node that publishes it stops it (another node within a
//!   second): 200 `{"node"}`, 404 when no node publishes it, 502 when Redis cannot be read.
//!
//! A node that is not in a cluster answers 404 to all three.

use std::sync::Arc;

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use sluice_actors::cluster::Cluster;
use sluice_actors::Core;

use super::{method, ApiError, ApiResult, Body};

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct NodeQuery {
    stream_name: Option<String>,
}

fn cluster(core: &Core) -> Result<&Arc<Cluster>, ApiError> {
    core.cluster.as_ref().ok_or(ApiError::NotInCluster)
}

async fn nodes(core: web::Data<Arc<Core>>) -> ApiResult {
    Ok(HttpResponse::Ok().json(cluster(&core)?.nodes()))
}

async fn node(core: web::Data<Arc<Core>>, q: web::Query<NodeQuery>, Body(b): Body<NodeQuery>) -> ApiResult {
    let name = q.into_inner().stream_name.or(b.stream_name);
    match cluster(&core)?.least_loaded(name.as_deref()) {
        Some((node, origin)) => Ok(HttpResponse::Ok().json(json!({ "node": node, "origin": origin }))),
        None => Err(ApiError::ClusterStore("no node known yet: Redis has not answered".into())),
    }
}

async fn streams(core: web::Data<Arc<Core>>) -> ApiResult {
    let list = cluster(&core)?.streams().await.map_err(|e| ApiError::ClusterStore(e.to_string()))?;
    let v: Vec<_> =
        list.into_iter().map(|(name, node)| json!({ "streamName": name, "node": node })).collect();
    Ok(HttpResponse::Ok().json(v))
}

async fn terminate(core: web::Data<Arc<Core>>, Body(b): Body<NodeQuery>) -> ApiResult {
    let name = b.stream_name.filter(|n| !n.is_empty()).ok_or(ApiError::NoSelector("streamName"))?;
    match cluster(&core)?.terminate(&name).await.map_err(|e| ApiError::ClusterStore(e.to_string()))? {
        Some(node) => Ok(HttpResponse::Ok().json(json!({ "node": node }))),
        None => Err(ApiError::StreamNotFound(name)),
    }
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(method("/cluster/nodes", nodes))
        .service(method("/cluster/node", node))
        .service(method("/cluster/streams", streams))
        .service(method("/cluster/terminate", terminate));
}
