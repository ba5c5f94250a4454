//! The line every bench prints first: which machine, which command (DESIGN §7: a figure is
//! only worth its machine and command).

pub fn print_machine() {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string());
    let args: Vec<String> = std::env::args().collect();
    eprintln!("machine: {cpus} CPUs available ({model})");
    eprintln!("command: {}", args.join(" "));
}
