//! `/readyz`: whether the cluster can take traffic. Ready means every slot
//! has a worker listening on every address its slot serves; otherwise the
//! first reason found, one line, for the probe's log.

use super::snapshot::{SlotStatus, Snapshot};

/// `Ok(())` when ready, else why not.
pub fn verdict(s: &Snapshot) -> Result<(), String> {
  // No slot at all: before the first fork, or once shutdown() or scale(0)
  // retired every worker.
  if s.slots.is_empty() {
    return Err("no workers: none started yet, or all stopped".into());
  }
  // The worst first: a crash loop does not heal by waiting.
  let worst = |st: &SlotStatus| match st {
    SlotStatus::CrashLoop { .. } => 0,
    SlotStatus::Restarting => 1,
    SlotStatus::NotListening { .. } => 2,
    SlotStatus::Serving { .. } => 3,
  };
  let Some(slot) = s.slots.iter().min_by_key(|x| (worst(&x.status), x.slot)) else {
    return Ok(());
  };
  match slot.status {
    SlotStatus::Serving { .. } => Ok(()),
    SlotStatus::CrashLoop { crashes } => Err(format!(
      "slot {} is in a crash loop ({crashes} crashes): not restarted",
      slot.slot
    )),
    SlotStatus::Restarting => Err(format!("slot {} is waiting to restart its worker", slot.slot)),
    SlotStatus::NotListening { id, missing: 0 } => Err(format!("slot {}: worker {id} is not listening yet", slot.slot)),
    SlotStatus::NotListening { id, missing } => Err(format!(
      "slot {}: worker {id} is not listening on {missing} of its slot's addresses yet",
      slot.slot
    )),
  }
}

#[cfg(test)]
mod tests {
  use super::super::snapshot::SlotState;
  use super::*;

  fn with(statuses: &[SlotStatus]) -> Snapshot {
    Snapshot {
      slots: statuses
        .iter()
        .enumerate()
        .map(|(i, st)| SlotState {
          slot: i as u32,
          restarts: 0,
          status: st.clone(),
        })
        .collect(),
      ..Snapshot::default()
    }
  }

  #[test]
  fn ready_only_when_every_slot_serves() {
    assert_eq!(
      verdict(&Snapshot::default()),
      Err("no workers: none started yet, or all stopped".into())
    );
    let serving = SlotStatus::Serving { id: 1 };
    assert_eq!(verdict(&with(&[serving.clone(), serving.clone()])), Ok(()));
    let starting = SlotStatus::NotListening { id: 4, missing: 0 };
    assert_eq!(
      verdict(&with(&[serving.clone(), starting])),
      Err("slot 1: worker 4 is not listening yet".into())
    );
    let partly = SlotStatus::NotListening { id: 4, missing: 1 };
    assert!(verdict(&with(&[partly]))
      .unwrap_err()
      .contains("on 1 of its slot's addresses"));
  }

  #[test]
  fn the_worst_reason_wins() {
    let s = with(&[
      SlotStatus::NotListening { id: 1, missing: 0 },
      SlotStatus::Restarting,
      SlotStatus::CrashLoop { crashes: 11 },
    ]);
    assert_eq!(
      verdict(&s),
      Err("slot 2 is in a crash loop (11 crashes): not restarted".into())
    );
    let s = with(&[SlotStatus::Serving { id: 1 }, SlotStatus::Restarting]);
    assert_eq!(verdict(&s), Err("slot 1 is waiting to restart its worker".into()));
  }
}
