//! rtnetlink, synchronously: the messages `ip link` sends, built with netlink-packet-route and
//! sent on a netlink-sys socket. One request at a time; each waits for the kernel's answer.

use std::io;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoMacVtap, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, MacVtapMode,
    State,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// A link as `ip -s link show` would describe it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// `bridge`, `tun`, `macvtap`, `veth`, ... (None for plain devices).
    pub kind: Option<String>,
    /// Index of the bridge (or other master) it is attached to.
    pub master: Option<u32>,
    /// Index of the lower device (macvtap, veth).
    pub lower: Option<u32>,
    /// MAC address.
    pub mac: Option<[u8; 6]>,
    /// MTU.
    pub mtu: Option<u32>,
    /// IFF_UP is set: the administrator brought it up.
    pub up: bool,
    /// IFF_RUNNING is set: up and operational (a tap: its fd is open; a macvtap: its lower
    /// device has carrier).
    pub running: bool,
    /// Operational state (up, down, unknown, lowerlayerdown, ...).
    pub oper_state: String,
    /// The macvtap mode, for macvtaps.
    pub macvtap_mode: Option<MacVtapMode>,
}

/// A netlink socket to the kernel's routing subsystem.
pub struct Netlink {
    socket: Socket,
    seq: u32,
}

/// What a request needs to be told about.
pub struct Changes {
    /// Bring the link up (true) or down (false).
    pub up: Option<bool>,
    /// New MTU.
    pub mtu: Option<u32>,
    /// New MAC address.
    pub mac: Option<[u8; 6]>,
    /// New master (bridge) index; `Some(0)` detaches.
    pub master: Option<u32>,
}

impl Netlink {
    /// Opens a NETLINK_ROUTE socket (in the caller's network namespace).
    pub fn new() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Self { socket, seq: 0 })
    }

    /// Sends `msg` and collects the answers until the final ACK (or DONE for dumps).
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq += 1;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0)?;

        let mut answers = Vec::new();
        let mut rx = vec![0u8; 64 * 1024];
        loop {
            let size = self.socket.recv(&mut &mut rx[..], 0)?;
            let mut offset = 0;
            while offset < size {
                let reply: NetlinkMessage<RouteNetlinkMessage> =
                    NetlinkMessage::deserialize(&rx[offset..size]).map_err(|e| {
                        io::Error::new(io::ErrorKind::InvalidData, format!("{e:?}"))
                    })?;
                let len = reply.header.length as usize;
                if reply.header.sequence_number == self.seq {
                    match reply.payload {
                        NetlinkPayload::Error(e) => {
                            return match e.code {
                                None => Ok(answers), // the ACK
                                Some(_) => Err(e.to_io()),
                            };
                        }
                        NetlinkPayload::Done(_) => return Ok(answers),
                        NetlinkPayload::InnerMessage(m) => answers.push(m),
                        _ => {}
                    }
                }
                if len == 0 {
                    break;
                }
                offset += len;
            }
        }
    }

    /// The link called `name`, or `None` if there is none.
    pub fn link(&mut self, name: &str) -> io::Result<Option<Link>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        match self.request(RouteNetlinkMessage::GetLink(msg), 0) {
            Ok(answers) => Ok(answers.into_iter().find_map(to_link)),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every link in this namespace.
    pub fn links(&mut self) -> io::Result<Vec<Link>> {
        let answers = self.request(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(answers.into_iter().filter_map(to_link).collect())
    }

    /// Creates link `name` of `kind` (with kind-specific `data`, on `lower` for macvtaps).
    pub fn new_link(
        &mut self,
        name: &str,
        kind: InfoKind,
        data: Option<InfoData>,
        lower: Option<u32>,
        mac: Option<[u8; 6]>,
    ) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        if let Some(lower) = lower {
            msg.attributes.push(LinkAttribute::Link(lower));
        }
        if let Some(mac) = mac {
            msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        let mut info = vec![LinkInfo::Kind(kind)];
        if let Some(data) = data {
            info.push(LinkInfo::Data(data));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(info));
        self.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
            .map(drop)
    }

    /// A macvtap on `lower` in `mode`.
    pub fn new_macvtap(
        &mut self,
        name: &str,
        lower: u32,
        mode: MacVtapMode,
        mac: Option<[u8; 6]>,
    ) -> io::Result<()> {
        let data = InfoData::MacVtap(vec![InfoMacVtap::Mode(mode)]);
        self.new_link(name, InfoKind::MacVtap, Some(data), Some(lower), mac)
    }

    /// Deletes the link with `index`.
    pub fn del_link(&mut self, index: u32) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.request(RouteNetlinkMessage::DelLink(msg), 0).map(drop)
    }

    /// Changes state, MTU, MAC or master of the link with `index`.
    pub fn set_link(&mut self, index: u32, changes: Changes) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        if let Some(up) = changes.up {
            msg.header.change_mask = LinkFlags::Up;
            msg.header.flags = if up {
                LinkFlags::Up
            } else {
                LinkFlags::empty()
            };
        }
        if let Some(mtu) = changes.mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(mac) = changes.mac {
            msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        if let Some(master) = changes.master {
            msg.attributes.push(LinkAttribute::Controller(master));
        }
        self.request(RouteNetlinkMessage::SetLink(msg), 0).map(drop)
    }
}

impl Changes {
    /// No change.
    pub const NONE: Changes = Changes {
        up: None,
        mtu: None,
        mac: None,
        master: None,
    };
}

pub(crate) fn to_link(msg: RouteNetlinkMessage) -> Option<Link> {
    let RouteNetlinkMessage::NewLink(msg) = msg else {
        return None;
    };
    let mut link = Link {
        index: msg.header.index,
        up: msg.header.flags.contains(LinkFlags::Up),
        running: msg.header.flags.contains(LinkFlags::Running),
        ..Default::default()
    };
    for attr in msg.attributes {
        match attr {
            LinkAttribute::IfName(name) => link.name = name,
            LinkAttribute::Controller(m) => link.master = Some(m),
            LinkAttribute::Link(l) => link.lower = Some(l),
            LinkAttribute::Mtu(m) => link.mtu = Some(m),
            LinkAttribute::Address(a) if a.len() == 6 => link.mac = a.try_into().ok(),
            LinkAttribute::OperState(s) => link.oper_state = oper_state_name(s),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(kind) => link.kind = Some(kind.to_string()),
                        LinkInfo::Data(InfoData::MacVtap(data)) => {
                            for d in data {
                                if let InfoMacVtap::Mode(mode) = d {
                                    link.macvtap_mode = Some(mode);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(link)
}

fn oper_state_name(state: State) -> String {
    match state {
        State::Up => "up".into(),
        State::Down => "down".into(),
        State::LowerLayerDown => "lowerlayerdown".into(),
        State::Dormant => "dormant".into(),
        State::NotPresent => "notpresent".into(),
        State::Testing => "testing".into(),
        _ => "unknown".into(),
    }
}
