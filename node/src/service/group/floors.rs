//! GroupFloors: what the groups one `__consumer_offsets` partition keeps
//! have consumed, for retention by consumption (see [`crate::retention`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use replog_proto::pb::{GroupFloor, GroupFloorsRequest, GroupFloorsResponse};

use crate::error::Result;
use crate::node::Node;

/// Per topic partition, the lowest offset any group here has committed. A
/// group counts for every partition of the topics it subscribes to (0
/// where it has no commit yet) and for every partition it committed on;
/// a group stops holding records back once it is deleted.
pub async fn handle(node: Arc<Node>, req: GroupFloorsRequest) -> Result<GroupFloorsResponse> {
    let Some(part) = super::led_groups_partition(&node, req.partition)? else {
        return Ok(GroupFloorsResponse { floors: Vec::new() });
    };
    let mut floors: BTreeMap<(String, u32), u64> = BTreeMap::new();
    for (name, st) in part.groups().await?.iter() {
        let mut mine: BTreeMap<(String, u32), u64> = BTreeMap::new();
        for (topic, count) in &st.topics {
            for p in 0..*count {
                mine.insert((topic.clone(), p), 0);
            }
        }
        for (topic, p, c) in part.committed(name)? {
            mine.insert((topic, p), c.offset);
        }
        for (k, offset) in mine {
            floors.entry(k).and_modify(|f| *f = (*f).min(offset)).or_insert(offset);
        }
    }
    Ok(GroupFloorsResponse {
        floors: floors
            .into_iter()
            .map(|((topic, partition), offset)| GroupFloor { topic, partition, offset })
            .collect(),
    })
}
