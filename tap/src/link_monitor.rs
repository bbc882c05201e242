//! Watching links go up and down, as `ip monitor link` does: a NETLINK_ROUTE socket that joined
//! the kernel's link group (RTNLGRP_LINK) receives an RTM_NEWLINK message whenever a link's
//! flags change (set up or down, carrier gained or lost) and an RTM_DELLINK when one is
//! deleted. The VMM's event loop watches the socket and tells each NIC's device, which reports
//! it to the guest (VIRTIO_NET_S_LINK_UP).

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::link::LinkMessage;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::netlink::to_link;

/// A link's state as a guest should see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkState {
    /// Interface index.
    pub index: u32,
    /// Up and running (IFF_UP and IFF_RUNNING); false once it is deleted.
    pub up: bool,
}

/// A socket that hears about every link change in the caller's network namespace.
pub struct LinkMonitor {
    socket: Socket,
    /// Room for one datagram; the kernel sends link messages of 1-2 KiB, several at a time in
    /// a dump.
    buf: Vec<u8>,
}

impl LinkMonitor {
    /// Joins the link group and asks for the state of every link (the answers arrive with the
    /// changes, through [`LinkMonitor::read`]), so nothing that happens from now on is missed.
    /// The socket is non-blocking, for an event loop.
    pub fn new() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind(&SocketAddr::new(0, 0))?;
        socket.add_membership(libc::RTNLGRP_LINK)?;
        socket.set_non_blocking(true)?;
        let monitor = Self {
            socket,
            buf: vec![0; 32 * 1024],
        };
        monitor.request_dump()?;
        Ok(monitor)
    }

    /// Asks the kernel to describe every link again.
    fn request_dump(&self) -> io::Result<()> {
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        let msg = RouteNetlinkMessage::GetLink(LinkMessage::default());
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket.send_to(&buf, &SocketAddr::new(0, 0), 0)?;
        Ok(())
    }

    /// Reads every message waiting and calls `seen` with the state of each link they describe,
    /// in order (the same link may come several times). Returns when the socket is empty. If
    /// the kernel dropped messages because we read too slowly (ENOBUFS), asks for every link's
    /// state again, so the last state seen is always the true one.
    pub fn read(&mut self, mut seen: impl FnMut(LinkState)) -> io::Result<()> {
        loop {
            let size = match self.socket.recv(&mut &mut self.buf[..], 0) {
                Ok(size) => size,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    self.request_dump()?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            parse(&self.buf[..size.min(self.buf.len())], &mut seen);
        }
    }
}

/// The link states in one datagram (malformed messages are skipped: the kernel wrote them,
/// but a newer kernel may add what this parser does not know).
fn parse(mut datagram: &[u8], seen: &mut impl FnMut(LinkState)) {
    while !datagram.is_empty() {
        let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(datagram) else {
            return;
        };
        let len = msg.header.length as usize;
        match msg.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)) => seen(LinkState {
                index: link.header.index,
                up: false,
            }),
            NetlinkPayload::InnerMessage(inner) => {
                if let Some(link) = to_link(inner) {
                    seen(LinkState {
                        index: link.index,
                        up: link.up && link.running,
                    });
                }
            }
            _ => {}
        }
        // Messages are 4-byte aligned within a datagram.
        let next = len.next_multiple_of(4);
        if len == 0 || next > datagram.len() {
            return;
        }
        datagram = &datagram[next..];
    }
}

impl AsRawFd for LinkMonitor {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::link::LinkFlags;

    fn message(msg: RouteNetlinkMessage) -> Vec<u8> {
        let mut packet = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(msg));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        buf
    }

    fn link(index: u32, flags: LinkFlags) -> LinkMessage {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = flags;
        msg
    }

    #[test]
    fn test_parse_reads_up_down_and_deleted_links_from_one_datagram() {
        let mut datagram = message(RouteNetlinkMessage::NewLink(link(
            7,
            LinkFlags::Up | LinkFlags::Running,
        )));
        // Up but without carrier (a macvtap whose lower device went down): not up for a guest.
        datagram.extend(message(RouteNetlinkMessage::NewLink(link(
            8,
            LinkFlags::Up,
        ))));
        datagram.extend(message(RouteNetlinkMessage::NewLink(link(
            9,
            LinkFlags::empty(),
        ))));
        datagram.extend(message(RouteNetlinkMessage::DelLink(link(
            7,
            LinkFlags::Up | LinkFlags::Running,
        ))));
        let mut states = Vec::new();
        parse(&datagram, &mut |s| states.push(s));
        let expect = [(7, true), (8, false), (9, false), (7, false)]
            .map(|(index, up)| LinkState { index, up });
        assert_eq!(states, expect);
    }

    #[test]
    fn test_parse_stops_at_garbage_and_truncation() {
        let mut states = Vec::new();
        parse(&[0xff; 3], &mut |s| states.push(s));
        let good = message(RouteNetlinkMessage::NewLink(link(3, LinkFlags::Up)));
        parse(&good[..good.len() - 4], &mut |s| states.push(s));
        let mut lying = good.clone();
        lying[0..4].copy_from_slice(&10_000u32.to_ne_bytes());
        parse(&lying, &mut |s| states.push(s));
        assert!(states.is_empty(), "{states:?}");
    }
}
