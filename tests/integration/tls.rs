//! What only HTTPS has: bad input on the TLS port, and certificates renewed without a restart.

use std::fs;
use std::io::Write;
use std::time::Duration;

use crate::support::{
    make_certificate, read_until_closed, tls_client_config, Scheme, Server, TempDir, IO_DEADLINE,
};

/// A TLS 1.0 ClientHello offering one CBC suite and nothing newer.
fn tls10_client_hello() -> Vec<u8> {
    let mut hello = vec![0x03, 0x01];
    hello.extend([7u8; 32]);
    hello.push(0);
    hello.extend([0x00, 0x02, 0x00, 0x2f]);
    hello.extend([0x01, 0x00]);
    let mut handshake = vec![0x01, 0, 0, hello.len() as u8];
    handshake.extend(hello);
    let mut record = vec![0x16, 0x03, 0x01, 0, handshake.len() as u8];
    record.extend(handshake);
    record
}

#[test]
fn bad_input_on_the_tls_port_is_closed_and_nothing_else_is_affected() {
    let server = Server::start_over(Scheme::Https, &["echo"], &["--header-timeout", "500"]);
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
        .collect();
    let hello = tls10_client_hello();
    let cases: &[(&str, &[u8])] = &[
        (
            "plain HTTP",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi",
        ),
        ("random bytes", &garbage),
        ("a TLS 1.0 ClientHello", &hello),
        ("a truncated handshake", &hello[..20]),
        ("nothing at all", b""),
    ];
    for (what, bytes) in cases {
        let mut tcp = server.connect_tcp();
        let _ = tcp.write_all(bytes);
        let answer = read_until_closed(&mut tcp);
        // Whatever came back is at most a TLS alert, never an HTTP answer.
        assert!(!answer.starts_with(b"HTTP/"), "{what}: got an HTTP answer");
        assert_eq!(
            server.post("/echo", what.as_bytes()).text(),
            *what,
            "after {what}"
        );
    }
}

#[test]
fn requests_say_whether_they_came_over_tls() {
    let server = Server::start_over(Scheme::Https, &["hello"], &[]);
    assert!(server.get("/hello").text().contains("tls: true\n"));
    let plain = Server::start_over(Scheme::Http, &["hello"], &[]);
    assert!(plain.get("/hello").text().contains("tls: false\n"));
}

#[test]
fn a_renewed_certificate_is_used_without_restart_and_a_broken_one_is_ignored() {
    let mut server = Server::start_over(Scheme::Https, &["echo"], &[]);
    assert_eq!(server.post("/echo", b"first").text(), "first");

    // A broken certificate file: the one in use stays.
    fs::write(server.certs_dir.join("cert.pem"), b"not a certificate").expect("break cert.pem");
    server.wait_for_log("kept the TLS certificate in use", IO_DEADLINE);
    assert_eq!(server.post("/echo", b"still").text(), "still");

    // A renewed pair from another CA: new connections get it.
    let renewed = TempDir::new("renewed-certs");
    make_certificate(&renewed.0);
    for file in ["key.pem", "cert.pem"] {
        fs::copy(renewed.0.join(file), server.certs_dir.join(file)).expect("install the new pair");
    }
    server.wait_for_log(
        "reloaded the TLS certificate",
        IO_DEADLINE + Duration::from_secs(5),
    );
    server.tls = tls_client_config(&renewed.0);
    assert_eq!(server.post("/echo", b"renewed").text(), "renewed");
}
