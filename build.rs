// Migrations are embedded at compile time; a new one (in any engine's
// folder under migrations/) must trigger a rebuild.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
