//! Who receives what: the subscription of every connected client, indexed by device so that
//! publishing one message touches only the clients that want it.
//!
//! Every subscribed id costs memory (in the client's set and in the index) whether or not it
//! names a device the server has seen: a client may subscribe before its devices first report.
//! So ids are capped per client and for all clients together, and a `subscribe` that would
//! pass either cap is refused whole.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::connection::Client;

/// Most device ids one client may be subscribed to (beyond that, `subscribe_all`).
pub(crate) const MAX_SUBSCRIBED_IDS: usize = 10_000;

/// Every client's subscription, plus the reverse index the publisher reads.
pub(crate) struct Subscriptions {
    /// Most ids held by all clients together.
    max_total: usize,
    /// Ids held now, all clients together (the sum of every `devices`).
    total: usize,
    clients: HashMap<u64, Subscriber>,
    /// Clients subscribed to every device. Disjoint from `by_device`.
    all: HashMap<u64, Arc<Client>>,
    by_device: HashMap<Arc<str>, HashMap<u64, Arc<Client>>>,
}

struct Subscriber {
    client: Arc<Client>,
    all: bool,
    /// Empty while `all`.
    devices: HashSet<Arc<str>>,
}

impl Subscriptions {
    /// No clients; at most `max_total` ids held by all clients together.
    pub(crate) fn new(max_total: usize) -> Self {
        Subscriptions {
            max_total,
            total: 0,
            clients: HashMap::new(),
            all: HashMap::new(),
            by_device: HashMap::new(),
        }
    }

    /// Ids held by per-device subscriptions now, all clients together.
    pub(crate) fn subscribed_ids(&self) -> usize {
        self.total
    }

    /// Adds a client that is subscribed to nothing.
    pub(crate) fn insert(&mut self, client: Arc<Client>) {
        self.clients.insert(
            client.id,
            Subscriber {
                client,
                all: false,
                devices: HashSet::new(),
            },
        );
    }

    /// Forgets a client and everything it was subscribed to.
    pub(crate) fn remove(&mut self, id: u64) {
        if let Some(mut sub) = self.clients.remove(&id) {
            self.all.remove(&id);
            self.total -= sub.devices.len();
            unindex(&mut self.by_device, id, sub.devices.drain());
        }
    }

    /// Adds `ids` to the client's subscription (nothing to do while it has all devices).
    pub(crate) fn subscribe(&mut self, id: u64, ids: Vec<String>) -> Result<(), String> {
        let Some(sub) = self.clients.get_mut(&id) else {
            return Ok(());
        };
        if sub.all {
            return Ok(());
        }
        let new: HashSet<&str> = ids
            .iter()
            .map(String::as_str)
            .filter(|d| !sub.devices.contains(*d))
            .collect();
        if sub.devices.len() + new.len() > MAX_SUBSCRIBED_IDS {
            return Err(format!(
                "a client may subscribe to at most {MAX_SUBSCRIBED_IDS} device ids; use subscribe_all"
            ));
        }
        if self.total + new.len() > self.max_total {
            return Err(format!(
                "the server holds as many subscribed device ids as it allows ({}, all clients together); \
                 subscribe to fewer or use subscribe_all",
                self.max_total
            ));
        }
        self.total += new.len();
        for device in new {
            // Share one `Arc<str>` per device between the index and every subscriber.
            let key = match self.by_device.get_key_value(device) {
                Some((key, _)) => key.clone(),
                None => Arc::from(device),
            };
            sub.devices.insert(key.clone());
            self.by_device
                .entry(key)
                .or_default()
                .insert(id, sub.client.clone());
        }
        Ok(())
    }

    /// Subscribes the client to every device, replacing its per-device subscription.
    pub(crate) fn subscribe_all(&mut self, id: u64) {
        let Some(sub) = self.clients.get_mut(&id) else {
            return;
        };
        sub.all = true;
        self.total -= sub.devices.len();
        unindex(&mut self.by_device, id, sub.devices.drain());
        self.all.insert(id, sub.client.clone());
    }

    /// Removes `ids` from the client's subscription (not from `all`).
    pub(crate) fn unsubscribe(&mut self, id: u64, ids: &[String]) {
        let Some(sub) = self.clients.get_mut(&id) else {
            return;
        };
        let removed: Vec<Arc<str>> = ids
            .iter()
            .filter_map(|d| sub.devices.take(d.as_str()))
            .collect();
        self.total -= removed.len();
        unindex(&mut self.by_device, id, removed.into_iter());
    }

    /// Ends every subscription of the client, `all` included.
    pub(crate) fn unsubscribe_all(&mut self, id: u64) {
        let Some(sub) = self.clients.get_mut(&id) else {
            return;
        };
        sub.all = false;
        self.all.remove(&id);
        self.total -= sub.devices.len();
        unindex(&mut self.by_device, id, sub.devices.drain());
    }

    /// Calls `f` once for every client that should receive a message about `device`.
    pub(crate) fn for_each_recipient(&self, device: &str, mut f: impl FnMut(&Client)) {
        for client in self.all.values() {
            f(client);
        }
        if let Some(clients) = self.by_device.get(device) {
            for client in clients.values() {
                f(client);
            }
        }
    }

    /// Whether the client is subscribed to `device`.
    pub(crate) fn matches(&self, id: u64, device: &str) -> bool {
        self.clients
            .get(&id)
            .is_some_and(|sub| sub.all || sub.devices.contains(device))
    }

    /// Messages waiting in all client queues.
    pub(crate) fn queued_messages(&self) -> usize {
        self.clients.values().map(|sub| sub.client.queued()).sum()
    }
}

fn unindex(
    by_device: &mut HashMap<Arc<str>, HashMap<u64, Arc<Client>>>,
    id: u64,
    devices: impl Iterator<Item = Arc<str>>,
) {
    for device in devices {
        if let Some(clients) = by_device.get_mut(&device) {
            clients.remove(&id);
            if clients.is_empty() {
                by_device.remove(&device);
            }
        }
    }
}
