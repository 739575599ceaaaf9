//! A change of members through learners, as `rsl-kv reconfigure` performs it: replicas new
//! to the ring are first added as learners (they catch up while the quorum stays as it
//! was), then promoted once the primary finds them caught up; a promotion refused because a
//! learner is still behind is asked again until a deadline. Every step is reported as it
//! happens. Addresses of new replicas that the servers' address books lack are asked of the
//! new replicas themselves and chosen in the log with the configuration.

use std::time::{Duration, Instant};

use crate::client::{Client, ClientError};
use crate::proto as pb;

/// How often a promotion refused for a lagging learner is asked again.
const PROMOTION_RETRY: Duration = Duration::from_millis(200);

/// Changes the ring's members to `members` through learners. `new_replicas` are the client
/// addresses of new replicas (started with `--join`) to ask for their node ids and
/// addresses; `wait` bounds how long promotions are retried while a learner catches up.
/// `report` hears each step, one line each. Returns the final configuration.
pub async fn reconfigure_through_learners(
    client: &mut Client,
    members: &[u64],
    new_replicas: &[String],
    wait: Duration,
    report: &mut dyn FnMut(String),
) -> Result<pb::ReconfigureResponse, ClientError> {
    let mut addresses = Vec::new();
    for address in new_replicas {
        let status = client.status_of(address).await?;
        let replica =
            status.members.iter().find(|m| m.node == status.node).map(|m| m.replica_address.clone());
        let Some(replica) = replica.filter(|r| !r.is_empty()) else {
            return Err(ClientError::InvalidArgument(format!(
                "the replica at {address} (node {}) does not say where its replica transport listens",
                status.node
            )));
        };
        report(format!("node {} at {address}: replica address {replica}", status.node));
        addresses.push(pb::Member {
            node: status.node,
            replica_address: replica,
            client_address: address.clone(),
        });
    }
    let (current, learners) = current_configuration(client).await?;
    let mut target = members.to_vec();
    target.sort_unstable();
    let new: Vec<u64> = target.iter().copied().filter(|node| !current.contains(node)).collect();
    if !new.is_empty() && !new.iter().all(|node| learners.contains(node)) {
        report(format!("step 1: adding {new:?} as learners (members stay {current:?})"));
        let added = client.reconfigure_with(&current, &new, addresses.clone()).await?;
        report(format!(
            "configuration {}: members {:?}, learners {:?}",
            added.configuration, added.members, added.learners
        ));
    }
    if !new.is_empty() {
        report(format!("step 2: promoting {new:?} once caught up"));
    }
    let started = Instant::now();
    loop {
        match client.reconfigure_with(&target, &[], addresses.clone()).await {
            Ok(configuration) => {
                report(format!(
                    "configuration {} with members {:?} governs slots from {}",
                    configuration.configuration, configuration.members, configuration.first_slot
                ));
                return Ok(configuration);
            }
            Err(ClientError::InvalidArgument(message))
                if message.contains("learner") && started.elapsed() < wait =>
            {
                report(format!("waiting: {message}"));
                tokio::time::sleep(PROMOTION_RETRY).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// The members and learners of the newest configuration any server reports.
async fn current_configuration(client: &mut Client) -> Result<(Vec<u64>, Vec<u64>), ClientError> {
    let newest = client
        .statuses()
        .await
        .into_iter()
        .filter_map(|(_, status)| status.ok())
        .max_by_key(|status| status.configuration);
    match newest {
        Some(status) => Ok((status.configuration_members, status.configuration_learners)),
        None => Err(ClientError::InvalidArgument("no server answered: the configuration is unknown".into())),
    }
}
