fn main() {
    for (name, secs) in dpsynth_privacy::bench::bench_rows() {
        println!("{secs:>9.4} s  {name}");
    }
}
