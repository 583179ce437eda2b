//! Picking the site's model: what it adds to the time to first token. One sandbox lane;
//! in turns, 10 times each, a streaming request that names no site model (`s-chat`),
//! one that names the model the picker shows already (nothing is clicked), and one that
//! names the other model (the picker opens, the option is clicked, and the page's switch
//! takes its 250 ms and renders the picker anew, as real pickers do). The figure is the
//! time from sending the request to reading its first piece of answer text.

use anyhow::Result;
use prq_tests::{config, Prq};

use crate::stats::Percentiles;
use crate::table::{ms, ms_diff, Table, Target};
use crate::wake::first_token_ms;

const REPEATS: usize = 10;

pub async fn run(table: &mut Table) -> Result<()> {
    table.section("picking the site's model: one sandbox lane");
    let prq = Prq::start(&config("concurrent", &[("sandbox", "s", "a")]));
    let (mut plain, mut kept, mut changed) = (Vec::new(), Vec::new(), Vec::new());
    // The picker shows Swift from here on, between the rounds too.
    first_token_ms(&prq, "s-swift", "warm up\nsandbox: tokens=1 delay_ms=0").await?;
    for k in 0..REPEATS {
        let prompt = format!("pick {k}\nsandbox: tokens=3 delay_ms=5");
        plain.push(first_token_ms(&prq, "s-chat", &prompt).await?);
        kept.push(first_token_ms(&prq, "s-swift", &prompt).await?);
        changed.push(first_token_ms(&prq, "s-deep", &prompt).await?);
        // Back to Swift, untimed, so that the next round starts where this one did.
        first_token_ms(&prq, "s-swift", &prompt).await?;
    }
    let (p, k, c) = (
        Percentiles::of(plain),
        Percentiles::of(kept),
        Percentiles::of(changed),
    );
    for (what, f) in [
        ("first token, no site model named", &p),
        ("first token, the model already picked", &k),
        ("first token, another model picked", &c),
    ] {
        table.info(
            what,
            format!("p50 {} · max {} (n={})", ms(f.p50), ms(f.p99), f.n),
        );
    }
    table.check(
        "added when the model is already picked (p50 − p50)",
        ms_diff(k.p50 - p.p50),
        k.p50 - p.p50,
        Target::Below(50.0, "ms"),
    );
    table.check(
        "added when the model changes (p50 − p50; the page's switch is 250 ms)",
        ms_diff(c.p50 - p.p50),
        c.p50 - p.p50,
        Target::Below(500.0, "ms"),
    );
    crate::shut(prq)
}
