//! Cluster-wide settings (`ClusterMeta::settings`, `replog cluster config
//! set KEY VALUE`): each overrides, on every node at once and without a
//! restart, the node setting of the same purpose. A setting not set leaves
//! each node's own in force.

use replog_raft_store::controller::ClusterMeta;

use crate::config::NodeConfig;

/// Bytes per second of the move throttle (`move_throttle_bytes_per_sec`).
pub const MOVE_THROTTLE: &str = "move.throttle";
/// Automatic balancing on or off (`auto_balance`).
pub const BALANCE_AUTO: &str = "balance.auto";
/// Most moves automatic balancing keeps under way (`balance_max_moves`).
pub const BALANCE_MAX_MOVES: &str = "balance.max_moves";

/// Every setting with what it does.
pub const ALL: &[(&str, &str)] = &[
    (
        MOVE_THROTTLE,
        "bytes per second each node sends to replicas that partition moves bring in (units KiB, MiB, GiB; 0: \
         unlimited); overrides move_throttle_bytes_per_sec",
    ),
    (BALANCE_AUTO, "true or false: balance replicas and leaders after a join or return; overrides auto_balance"),
    (
        BALANCE_MAX_MOVES,
        "most moves automatic balancing keeps under way, cluster-wide (1 or more); overrides balance_max_moves",
    ),
];

/// `key` if it is a setting, or why not.
pub fn known(key: &str) -> Result<&str, String> {
    if ALL.iter().any(|(k, _)| *k == key) {
        return Ok(key);
    }
    let known: Vec<&str> = ALL.iter().map(|(k, _)| *k).collect();
    Err(format!("unknown cluster setting (known: {})", known.join(", ")))
}

/// The stored form of `value` for `key`, or why it is refused.
pub fn check(key: &str, value: &str) -> Result<String, String> {
    match known(key)? {
        MOVE_THROTTLE => crate::throttle::parse_rate(value).map(|n| n.to_string()),
        BALANCE_AUTO => {
            value.trim().parse::<bool>().map(|b| b.to_string()).map_err(|_| format!("{value:?} is not true or false"))
        }
        BALANCE_MAX_MOVES => match value.trim().parse::<u32>() {
            Ok(n) if n >= 1 => Ok(n.to_string()),
            _ => Err(format!("{value:?} is not a whole number of 1 or more")),
        },
        other => Err(format!("{other}: no check for this setting")),
    }
}

fn get<T: std::str::FromStr>(meta: &ClusterMeta, key: &str) -> Option<T> {
    meta.settings.get(key).and_then(|v| v.parse().ok())
}

/// The move throttle in force here.
pub fn move_throttle(meta: &ClusterMeta, config: &NodeConfig) -> u64 {
    get(meta, MOVE_THROTTLE).unwrap_or(config.move_throttle_bytes_per_sec)
}

/// Whether automatic balancing is on.
pub fn auto_balance(meta: &ClusterMeta, config: &NodeConfig) -> bool {
    get(meta, BALANCE_AUTO).unwrap_or(config.auto_balance)
}

/// Most moves automatic balancing keeps under way.
pub fn balance_max_moves(meta: &ClusterMeta, config: &NodeConfig) -> usize {
    get::<u32>(meta, BALANCE_MAX_MOVES).unwrap_or(config.balance_max_moves).max(1) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_checked_and_stored_in_one_form() {
        assert_eq!(check(MOVE_THROTTLE, "1MiB"), Ok("1048576".into()));
        assert_eq!(check(BALANCE_AUTO, " false"), Ok("false".into()));
        assert_eq!(check(BALANCE_MAX_MOVES, "3"), Ok("3".into()));
        assert!(check(BALANCE_MAX_MOVES, "0").is_err());
        assert!(check(BALANCE_AUTO, "maybe").is_err());
        assert!(check("move.throttel", "1").unwrap_err().contains("unknown"));
        for (key, _) in ALL {
            assert!(known(key).is_ok() && check(key, "").is_err(), "{key}: an empty value is no value");
        }
    }

    #[test]
    fn a_cluster_setting_overrides_the_node_setting_and_clearing_it_restores_it() {
        let config = NodeConfig { id: 1, ..Default::default() };
        let mut meta = ClusterMeta::default();
        assert_eq!(move_throttle(&meta, &config), config.move_throttle_bytes_per_sec);
        meta.settings.insert(MOVE_THROTTLE.into(), "1024".into());
        meta.settings.insert(BALANCE_AUTO.into(), "false".into());
        assert_eq!((move_throttle(&meta, &config), auto_balance(&meta, &config)), (1024, false));
        meta.settings.clear();
        assert!(auto_balance(&meta, &config));
        assert_eq!(balance_max_moves(&meta, &config), config.balance_max_moves as usize);
    }
}
