//! The node's pod network: one bridge with a private /24 that exists only on this machine,
//! and per pod a network namespace joined to it by a veth pair. Pods get no default route,
//! so nothing they send can leave the bridge's subnet, let alone the machine.

use std::{collections::BTreeSet, net::Ipv4Addr, process::Stdio, sync::Mutex};

use super::KubeletError;

/// Runs `ip` with `args`.
pub async fn ip(args: &[&str]) -> Result<(), KubeletError> {
    let out = tokio::process::Command::new("ip")
        .args(args)
        .output()
        .await
        .map_err(|e| KubeletError::Network(format!("ip {}: {e}", args.join(" "))))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(KubeletError::Network(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim())))
    }
}

/// The bridge and the addresses handed out on it.
#[derive(Debug)]
pub struct Network {
    /// The bridge's name.
    pub bridge: String,
    /// `a.b.c.0` of the /24.
    pub subnet: Ipv4Addr,
    used: Mutex<Addresses>,
}

/// The host parts handed out, and the last one: the next goes to the first free one after
/// it, as CNI's host-local IPAM does, so an address just freed is the last to be reused.
#[derive(Debug, Default)]
struct Addresses {
    used: BTreeSet<u8>,
    last: u8,
}

impl Addresses {
    /// Takes the first free host part after the last one taken, wrapping around 2..=254.
    fn take(&mut self) -> Option<u8> {
        let start = self.last.max(1);
        let free = (start + 1..=254).chain(2..=start).find(|h| !self.used.contains(h))?;
        self.used.insert(free);
        self.last = free;
        Some(free)
    }
}

/// The MAC address of a pod's interface, made of its IPv4 address (`0a:58:` then the four
/// octets), as CNI's bridge plugin gives it: a reused address comes with the same MAC, so no
/// neighbour cache (the node's or another pod's) keeps sending its frames to a link that is
/// gone.
fn mac_of(address: Ipv4Addr) -> String {
    let [a, b, c, d] = address.octets();
    format!("0a:58:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

/// A pod's place on the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The network namespace.
    pub netns: String,
    /// The pod's address.
    pub ip: Ipv4Addr,
}

impl Network {
    /// The bridge's own address, where pods reach the node (and the API server).
    pub fn gateway(&self) -> Ipv4Addr {
        let [a, b, c, _] = self.subnet.octets();
        Ipv4Addr::new(a, b, c, 1)
    }

    /// Creates a bridge named after `id` on a /24 of 10.200.0.0/13 that no interface of the
    /// machine uses yet.
    pub async fn create(id: u32) -> Result<Self, KubeletError> {
        // Choosing a free subnet and taking it is one step for every kubelet of the machine.
        let lock_path = std::env::temp_dir().join("biometrics-kubelet-network.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| KubeletError::io(&lock_path, e))?;
        let lock = tokio::task::spawn_blocking(move || {
            rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).map(|()| lock)
        })
        .await
        .map_err(|e| KubeletError::Network(e.to_string()))?
        .map_err(|e| KubeletError::Network(format!("lock {}: {e}", lock_path.display())))?;
        let created = Self::create_locked(id).await;
        drop(lock);
        created
    }

    async fn create_locked(id: u32) -> Result<Self, KubeletError> {
        let bridge = format!("bmk{:06x}", id & 0xff_ffff);
        let taken = std::process::Command::new("ip")
            .args(["-o", "-4", "addr", "show"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let subnet = (0..2048u32)
            .map(|i| (id.wrapping_add(i)) % 2048)
            .map(|n| Ipv4Addr::new(10, 200 + u8::try_from(n / 256).unwrap_or(0), u8::try_from(n % 256).unwrap_or(0), 0))
            .find(|s| {
                let [a, b, c, _] = s.octets();
                !taken.contains(&format!(" {a}.{b}.{c}."))
            })
            .ok_or_else(|| KubeletError::Network("no free /24 in 10.200.0.0/13".into()))?;
        let network = Self { bridge, subnet, used: Mutex::new(Addresses::default()) };
        ip(&["link", "add", &network.bridge, "type", "bridge"]).await?;
        ip(&["addr", "add", &format!("{}/24", network.gateway()), "dev", &network.bridge]).await?;
        ip(&["link", "set", &network.bridge, "up"]).await?;
        Ok(network)
    }

    /// Gives a pod its namespace, address and link.
    pub async fn attach(&self, key: &str) -> Result<Attachment, KubeletError> {
        let host = self
            .used
            .lock()
            .expect("lock")
            .take()
            .ok_or_else(|| KubeletError::Network("the node's /24 is full".into()))?;
        let [a, b, c, _] = self.subnet.octets();
        let address = Ipv4Addr::new(a, b, c, host);
        let netns = netns_name(&self.bridge, key);
        let veth = format!("{}{host:02x}", &self.bridge[..self.bridge.len().min(12)]);
        let result = async {
            ip(&["netns", "add", &netns]).await?;
            let mac = mac_of(address);
            ip(&["link", "add", &veth, "type", "veth", "peer", "name", "eth0", "address", &mac, "netns", &netns])
                .await?;
            ip(&["link", "set", &veth, "master", &self.bridge, "up"]).await?;
            ip(&["-n", &netns, "addr", "add", &format!("{address}/24"), "dev", "eth0"]).await?;
            ip(&["-n", &netns, "link", "set", "eth0", "up"]).await?;
            ip(&["-n", &netns, "link", "set", "lo", "up"]).await
        }
        .await;
        if let Err(e) = result {
            self.detach(&Attachment { netns, ip: address }).await;
            return Err(e);
        }
        Ok(Attachment { netns, ip: address })
    }

    /// Removes a pod's namespace (its veth goes with it) and frees its address.
    pub async fn detach(&self, attachment: &Attachment) {
        let _ = ip(&["netns", "del", &attachment.netns]).await;
        self.used.lock().expect("lock").used.remove(&attachment.ip.octets()[3]);
    }

    /// Removes the bridge and every namespace made on it, now (also from `Drop` paths).
    pub fn remove_now(&self) {
        let quiet = |args: &[&str]| {
            let _ = std::process::Command::new("ip").args(args).stdout(Stdio::null()).stderr(Stdio::null()).status();
        };
        if let Ok(out) = std::process::Command::new("ip").args(["netns", "list"]).output() {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let name = line.split_whitespace().next().unwrap_or_default();
                if name.starts_with(&format!("{}-", self.bridge)) {
                    quiet(&["netns", "del", name]);
                }
            }
        }
        quiet(&["link", "del", &self.bridge]);
    }
}

/// The network namespace (as `ip netns` names it) of the pod whose uid starts with `key`.
pub fn netns_name(bridge: &str, key: &str) -> String {
    format!("{bridge}-{key}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_go_round_before_one_is_reused() {
        let mut a = Addresses::default();
        assert_eq!((a.take(), a.take(), a.take()), (Some(2), Some(3), Some(4)));
        a.used.remove(&2);
        a.used.remove(&3);
        assert_eq!(a.take(), Some(5), "the address just freed is not the next one");
        a.used.extend(6..=254);
        assert_eq!(a.take(), Some(2), "wrapped around to the first free one");
        assert_eq!(a.take(), Some(3));
        assert_eq!(a.take(), None, "the /24 is full");
    }

    #[test]
    fn a_pods_mac_is_made_of_its_address() {
        assert_eq!(mac_of(Ipv4Addr::new(10, 200, 3, 17)), "0a:58:0a:c8:03:11");
    }
}
