//! The load-balancer agent (`--agent`): HAProxy's `agent-check` line from the real binary, as
//! the queue fills and empties.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use crate::support::*;

/// The agent's whole answer: it writes one line and closes.
fn agent_line(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect to the agent");
    stream.set_read_timeout(Some(IO_DEADLINE)).expect("timeout");
    let mut line = String::new();
    stream.read_to_string(&mut line).expect("the agent's line");
    line
}

fn agent_addr(server: &mut Server) -> SocketAddr {
    let line = server.wait_for_log("load-balancer agent on tcp://", IO_DEADLINE);
    line.rsplit("tcp://")
        .next()
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or_else(|| panic!("unparsable: {line}"))
}

fn queue_echo(server: &Server) -> TcpStream {
    let mut stream = server.connect_tcp();
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx")
        .expect("send");
    stream
}

#[test]
fn the_agent_lowers_the_weight_as_the_queue_fills_to_0_at_the_mark_and_recovers() {
    let mut server = Server::start_over(
        Scheme::Http,
        &["crash", "echo"],
        &["--agent", "127.0.0.1:0", "--queue", "4"],
    );
    let agent = agent_addr(&mut server);
    assert_eq!(agent_line(agent), "up 100%\n");
    // A call of each first: the predicted wait then counts their real (tiny) times, not the
    // deadline a route with no history is charged.
    assert_eq!(server.get("/crash/fine").status, 200);
    assert_eq!(server.post("/echo", b"x").status, 200);

    let (gate, mut blocker) = server.hold_lane("/crash/x");
    let mut queued = vec![queue_echo(&server)];
    server.wait_queued(1);
    // One of the three that make the high-water mark of a queue of 4.
    assert_eq!(agent_line(agent), "up 67%\n");
    queued.extend((0..2).map(|_| queue_echo(&server)));
    // At the mark (3 of 4) its weight is 0, where /-/ready turns 503.
    wait_until("the agent to say 0%", IO_DEADLINE, || {
        (agent_line(agent) == "up 0%\n").then_some(())
    });
    assert_eq!(server.get("/-/ready").status, 503);

    gate.open();
    assert_eq!(read_response(&mut blocker).map(|r| r.status), Some(200));
    for stream in &mut queued {
        assert_eq!(read_response(stream).map(|r| r.status), Some(200));
    }
    wait_until("the agent to say 100% again", IO_DEADLINE, || {
        (agent_line(agent) == "up 100%\n").then_some(())
    });
}
