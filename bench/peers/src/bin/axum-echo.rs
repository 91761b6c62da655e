//! `axum-echo ADDR`: POST /echo answers the body; tower's load shedding in front of a
//! concurrency limit (1024) refuses with 503 past it, the way an in-process Rust service sheds
//! load. The multi-threaded runtime uses every core.

use axum::body::Bytes;
use axum::error_handling::HandleErrorLayer;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use tower::ServiceBuilder;

#[tokio::main]
async fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let app = Router::new().route("/echo", post(|body: Bytes| async move { body })).layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(|_| async { StatusCode::SERVICE_UNAVAILABLE }))
            .load_shed()
            .concurrency_limit(1024),
    );
    let listener = match tokio::net::TcpListener::bind(&addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("axum-echo: cannot bind {addr}: {e}");
            std::process::exit(1);
        }
    };
    if let Ok(local) = listener.local_addr() {
        println!("listening on http://{local}");
    }
    if let Err(e) = axum::serve(listener, app).await {
        eprintln!("axum-echo: {e}");
    }
}
