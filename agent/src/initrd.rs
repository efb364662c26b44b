//! `nodectl initrd` (being written).
pub struct Paths;
impl Default for Paths {
    fn default() -> Self {
        Paths
    }
}
pub fn run(_: &Paths) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
pub fn failure_banner(e: &anyhow::Error) -> String {
    format!("{e:#}")
}
