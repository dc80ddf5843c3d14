use nu_coord::{Scope, WorkerKind};

#[test]
fn kinds_round_trip_through_text() {
    for kind in WorkerKind::ALL {
        assert_eq!(kind.to_string().parse::<WorkerKind>().unwrap(), kind);
    }
    assert_eq!(WorkerKind::Orchestrator.as_str(), "orchestrator");
    assert_eq!(WorkerKind::BackgroundWorker.as_str(), "background_worker");
}

#[test]
fn unknown_kind_lists_the_valid_ones() {
    let err = "Orchestrator".parse::<WorkerKind>().unwrap_err();
    assert_eq!(err.given(), "Orchestrator");
    assert_eq!(
        err.to_string(),
        "invalid worker kind \"Orchestrator\": must be one of: orchestrator, background_worker"
    );
}

#[test]
fn metadata_keys_are_the_original_ones() {
    assert_eq!(
        WorkerKind::Orchestrator.metadata_key(),
        "active_orchestrator_count"
    );
    assert_eq!(
        WorkerKind::BackgroundWorker.metadata_key(),
        "active_background_worker_count"
    );
}

#[test]
fn a_kind_is_a_scope() {
    assert_eq!(
        Scope::from(WorkerKind::Orchestrator),
        Scope::Only(WorkerKind::Orchestrator)
    );
}
