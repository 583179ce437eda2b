//! The sandbox chat site (being written).
pub fn router() -> axum::Router {
    axum::Router::new()
}
