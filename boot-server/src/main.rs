fn main() {
    println!("bootd: not yet");
}
