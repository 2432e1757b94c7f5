//! Containers of dead processes: each container carries its owner's label
//! (this machine's boot, pid and start time); the first environment of any
//! later process removes those whose owner is gone, with their networks.

/// Names the process that owns a container: this machine's boot, the pid
/// and its start time. A process killed outright (nextest's timeout) runs
/// no `Drop`; the next environment of any process on this machine removes
/// its containers ([`reap_orphans`]). Kept containers (`DRILL_KEEP=1`) get none.
pub const OWNER_LABEL: &str = "drillbook.owner";

pub(super) fn owner_label() -> Option<String> {
    if crate::scratch::keep_requested() {
        return None;
    }
    crate::scratch::machine_owner_label()
}

/// Removes (force, with their anonymous volumes) the containers of dead
/// processes of this machine, then their environments' networks; returns
/// the containers' ids. Failures are logged, never fatal: reaping is
/// housekeeping.
pub async fn reap_orphans() -> Vec<String> {
    use bollard::query_parameters::{ListContainersOptions, RemoveContainerOptions};
    let docker = match bollard::Docker::connect_with_defaults() {
        Ok(docker) => docker,
        Err(e) => {
            tracing::warn!("failed to connect to Docker to reap orphaned containers: {e}");
            return Vec::new();
        }
    };
    let options = ListContainersOptions {
        all: true,
        filters: Some(std::collections::HashMap::from([(
            "label".to_owned(),
            vec![OWNER_LABEL.to_owned()],
        )])),
        ..ListContainersOptions::default()
    };
    let containers = match docker.list_containers(Some(options)).await {
        Ok(containers) => containers,
        Err(e) => {
            tracing::warn!("failed to list containers to reap orphans: {e}");
            return Vec::new();
        }
    };
    let mut reaped = Vec::new();
    let mut networks = std::collections::BTreeSet::new();
    for container in containers {
        let gone = container
            .labels
            .as_ref()
            .and_then(|labels| labels.get(OWNER_LABEL))
            .is_some_and(|label| crate::scratch::machine_owner_is_gone(label));
        let Some(id) = container.id.filter(|_| gone) else {
            continue;
        };
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..RemoveContainerOptions::default()
        };
        match docker.remove_container(&id, Some(options)).await {
            Ok(()) => {
                tracing::warn!(container = %id, "reaped a container whose drill process died");
                reaped.push(id);
                // Its environment's network (random name, used by that
                // environment alone) goes once its last container is gone.
                networks.extend(
                    container
                        .network_settings
                        .and_then(|settings| settings.networks)
                        .into_iter()
                        .flat_map(|networks| networks.into_keys())
                        .filter(|name| name.starts_with("drillbook-")),
                );
            }
            Err(e) => tracing::warn!(container = %id, "failed to remove an orphaned container: {e}"),
        }
    }
    for network in networks {
        if let Err(e) = docker.remove_network(&network).await {
            tracing::warn!(network = %network, "failed to remove an orphaned network: {e}");
        }
    }
    reaped
}

/// [`reap_orphans`], once per process, before its first environment; then
/// the temp dirs of dead processes (the data dirs those containers had
/// mounted among them), as a process that starts a cluster would.
pub(super) async fn reap_orphans_once() {
    static REAPED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    REAPED
        .get_or_init(|| async {
            reap_orphans().await;
            let _ = tokio::task::spawn_blocking(crate::scratch::reap_orphaned_dirs).await;
        })
        .await;
}
