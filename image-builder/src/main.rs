fn main() {
    println!("nodeimg: not yet");
}
