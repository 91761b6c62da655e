//! Loading at start-up: what is refused, with which log line, and that the rest still serve.

use std::fs;

use crate::support::{legacy_plugin_library, plugin_library, Scheme, Server, IO_DEADLINE};

#[test]
fn broken_and_incompatible_files_are_refused_while_the_rest_serve() {
    let mut server = Server::start_with(Scheme::Http, &["echo"], &[], |dir| {
        fs::write(dir.join("garbage.so"), b"this is not an ELF file").expect("write garbage");
        fs::copy(
            plugin_library("incompatible"),
            dir.join("libincompatible.so"),
        )
        .expect("copy the incompatible fixture");
        fs::write(dir.join("notes.txt"), b"not a plugin, not a .so").expect("write notes");
        fs::copy(plugin_library("echo"), dir.join("Bad.Name.so")).expect("copy under a bad name");
    });
    let garbage = server.wait_for_log("garbage.so", IO_DEADLINE);
    assert!(
        garbage.contains("refused") && garbage.contains("not a loadable library"),
        "{garbage}"
    );
    let incompatible = server.wait_for_log("libincompatible.so", IO_DEADLINE);
    assert!(
        incompatible.contains("refused") && incompatible.contains("incompatible plugin-api"),
        "{incompatible}"
    );
    let bad_name = server.wait_for_log("Bad.Name.so", IO_DEADLINE);
    assert!(bad_name.contains("ignored"), "{bad_name}");
    assert!(
        server.log.iter().all(|l| l.len() < 400),
        "a refusal is one readable line, not a layout dump"
    );
    let notes = server.wait_for_log("notes.txt", IO_DEADLINE);
    assert!(
        notes.contains("neither a .so library nor an executable program"),
        "{notes}"
    );
    assert_eq!(server.post("/echo", b"served").text(), "served");
    assert_eq!(server.post("/incompatible", b"").status, 404);
    assert_eq!(server.post("/garbage", b"").status, 404);
}

#[test]
fn lib_prefix_and_bare_names_route_alike() {
    let server = Server::start_with(Scheme::Http, &[], &[], |dir| {
        fs::copy(plugin_library("echo"), dir.join("echo.so")).expect("copy echo");
        fs::copy(plugin_library("hello"), dir.join("libgreet.so")).expect("copy hello");
    });
    assert_eq!(server.post("/echo", b"bare").text(), "bare");
    assert!(server.get("/greet").text().starts_with("Hello, world!"));
}

#[test]
fn a_missing_plugins_folder_serves_admin_routes() {
    let server = Server::start_with(Scheme::Http, &[], &[], |dir| {
        fs::remove_dir(dir).expect("remove the plugins folder");
    });
    assert_eq!(server.get("/-/health").text(), "ok\n");
    assert_eq!(server.post("/echo", b"").status, 404);
}

#[test]
fn a_plugins_folder_others_can_write_is_refused_unless_overridden() {
    use std::os::unix::fs::PermissionsExt;
    let open_up = |dir: &std::path::Path| {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o777)).expect("chmod 777");
    };
    let mut server = Server::start_with(Scheme::Http, &["echo"], &[], open_up);
    let refusal = server.wait_for_log("refused plugins folder", IO_DEADLINE);
    assert!(refusal.contains("mode 0777"), "{refusal}");
    assert_eq!(server.post("/echo", b"x").status, 404);

    let mut risky = Server::start_with(
        Scheme::Http,
        &["echo"],
        &["--insecure-plugins-dir"],
        open_up,
    );
    risky.wait_for_log("--insecure-plugins-dir:", IO_DEADLINE);
    assert_eq!(risky.post("/echo", b"served").text(), "served");
}

#[test]
fn a_plugin_file_others_can_write_is_refused_until_fixed() {
    use std::os::unix::fs::PermissionsExt;
    let mut server = Server::start_with(Scheme::Http, &["echo"], &[], |dir| {
        let file = dir.join("libecho.so");
        fs::set_permissions(file, fs::Permissions::from_mode(0o664)).expect("chmod 664");
    });
    let refusal = server.wait_for_log("libecho.so: other users can write it", IO_DEADLINE);
    assert!(refusal.contains("chmod go-w"), "{refusal}");
    assert_eq!(server.post("/echo", b"x").status, 404);
    let file = server.plugins_dir.join("libecho.so");
    fs::set_permissions(file, fs::Permissions::from_mode(0o644)).expect("chmod 644");
    crate::support::wait_until("the fixed file to load", IO_DEADLINE, || {
        (server.post("/echo", b"fixed").text() == "fixed").then_some(())
    });
}

/// The compatibility rule in plugin-api's docs: a server loads plugins built against any
/// plugin-api 0.1.x, older than its own included, without a rebuild.
#[test]
fn a_plugin_built_against_plugin_api_0_1_0_loads_and_answers() {
    let legacy = legacy_plugin_library();
    let server = Server::start_with(Scheme::Http, &[], &[], |dir| {
        fs::copy(&legacy, dir.join("legacy.so")).expect("copy the legacy fixture");
    });
    let reply = server.post("/legacy", b"still here");
    assert_eq!(reply.status, 200, "{}", server.log.join("\n"));
    assert_eq!(reply.text(), "legacy still here");
    assert_eq!(reply.header("x-built-with"), Some("plugin-api 0.1.0"));
    // A big body comes to it as a mapped file, which its 0.1.0 code reads and frees as it
    // always did.
    let big: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 253) as u8).collect();
    let reply = server.post("/legacy", &big);
    assert_eq!(reply.status, 200);
    assert!(reply.body.strip_prefix(b"legacy ") == Some(&big[..]));
    let plugins = server.get("/-/plugins").text();
    assert!(plugins.contains("plugin-api 0.1.0"), "{plugins}");
}
