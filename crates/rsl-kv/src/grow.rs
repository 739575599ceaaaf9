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

/// A change of members under way: the members asked for, those new to the ring (learners
/// after [`add_as_learners`]) and the addresses of new replicas chosen with each step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Growth {
    /// The members asked for, sorted.
    pub target: Vec<u64>,
    /// Those not members of the configuration found in force.
    pub new: Vec<u64>,
    /// Addresses of new replicas, asked of them.
    pub addresses: Vec<pb::Member>,
}

/// Changes the ring's members to `members` through learners: [`add_as_learners`], then
/// [`promote`]. `new_replicas` are the client addresses of new replicas (started with
/// `--join` or `--join-via`) to ask for their node ids and addresses; `wait` bounds how long
/// promotions are retried while a learner catches up. `report` hears each step, one line
/// each. Returns the final configuration.
pub async fn reconfigure_through_learners(
    client: &mut Client,
    members: &[u64],
    new_replicas: &[String],
    wait: Duration,
    report: &mut (dyn FnMut(String) + Send),
) -> Result<pb::ReconfigureResponse, ClientError> {
    let growth = add_as_learners(client, members, new_replicas, report).await?;
    promote(client, &growth, wait, report).await
}

/// Step 1: asks `new_replicas` (client addresses) for their node ids and addresses, and
/// adds the replicas of `members` new to the ring as learners (the members stay as they
/// are) unless they are learners already.
pub async fn add_as_learners(
    client: &mut Client,
    members: &[u64],
    new_replicas: &[String],
    report: &mut (dyn FnMut(String) + Send),
) -> Result<Growth, ClientError> {
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
    Ok(Growth { target, new, addresses })
}

/// Step 2: changes the members to `growth.target`, promoting its learners; a refusal
/// because one is still too far behind (the primary waits for it a while before it
/// refuses) is asked again until `wait` has passed, reported as `waiting: <why>`.
pub async fn promote(
    client: &mut Client,
    growth: &Growth,
    wait: Duration,
    report: &mut (dyn FnMut(String) + Send),
) -> Result<pb::ReconfigureResponse, ClientError> {
    if !growth.new.is_empty() {
        report(format!("step 2: promoting {:?} once caught up", growth.new));
    }
    let started = Instant::now();
    loop {
        match client.reconfigure_with(&growth.target, &[], growth.addresses.clone()).await {
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
