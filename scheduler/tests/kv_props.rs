//! Property tests: across random sequences of start/append/fork/free, the
//! block manager never leaks, never double-frees, keeps reference counts equal
//! to the number of tables holding each block, never exceeds capacity, and
//! returns to full capacity when everything is freed.

use std::collections::HashMap;

use proptest::prelude::*;
use switchyard_scheduler::kv::{BlockManager, BlockTable};

#[derive(Debug, Clone)]
enum Op {
    /// Start a new sequence with a prompt drawn from a few shared prefixes.
    Start { prefix: u8, len: u16 },
    /// Append tokens to a live sequence (allocate + compute + commit).
    Append { pick: u16, n: u16 },
    /// Fork a live sequence.
    Fork { pick: u16 },
    /// Free a live sequence.
    Free { pick: u16 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..4, 1u16..80).prop_map(|(prefix, len)| Op::Start { prefix, len }),
        (any::<u16>(), 1u16..40).prop_map(|(pick, n)| Op::Append { pick, n }),
        any::<u16>().prop_map(|pick| Op::Fork { pick }),
        any::<u16>().prop_map(|pick| Op::Free { pick }),
    ]
}

struct Live {
    table: BlockTable,
    tokens: Vec<u32>,
    computed: u32,
}

fn check(m: &BlockManager, live: &[Live], capacity: u32) {
    m.check_invariants().unwrap();
    let mut holders: HashMap<u32, u32> = HashMap::new();
    for l in live {
        for b in l.table.blocks() {
            *holders.entry(b.0).or_default() += 1;
        }
        // A table covers exactly the tokens it has computed (rounded up to blocks).
        assert_eq!(l.table.len() as u32, m.blocks_for(l.computed));
    }
    for b in 0..capacity {
        let held = holders.get(&b).copied().unwrap_or(0);
        assert_eq!(
            m.ref_count(switchyard_backends::BlockId(b)),
            held,
            "block {b}"
        );
    }
    let used = holders.len() as u32;
    assert!(used <= capacity);
    assert_eq!(m.num_free_blocks() + used, capacity);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn block_manager_invariants(ops in prop::collection::vec(op(), 1..200), capacity in 4u32..64) {
        let bs = 4;
        let mut m = BlockManager::new(capacity, bs);
        let mut live: Vec<Live> = Vec::new();
        for op in ops {
            match op {
                Op::Start { prefix, len } => {
                    let tokens: Vec<u32> = (0..u32::from(len)).map(|i| u32::from(prefix) * 1000 + i).collect();
                    let mut table = BlockTable::default();
                    let cached = m.start(&mut table, &tokens);
                    prop_assert!(cached < tokens.len() as u32);
                    prop_assert_eq!(cached % bs, 0);
                    let total = tokens.len() as u32;
                    if m.ensure_slots(&mut table, cached, total).is_ok() {
                        m.commit(&mut table, &tokens, total);
                        live.push(Live { table, tokens, computed: total });
                    } else {
                        // All or nothing: the cached prefix is all it holds; give it back.
                        prop_assert_eq!(table.len() as u32, cached / bs);
                        m.free(&mut table);
                    }
                }
                Op::Append { pick, n } if !live.is_empty() => {
                    let i = pick as usize % live.len();
                    let l = &mut live[i];
                    let before = l.table.blocks().to_vec();
                    let total = l.computed + u32::from(n);
                    match m.ensure_slots(&mut l.table, l.computed, total) {
                        Ok(copy) => {
                            if let Some(c) = copy {
                                prop_assert!(before.contains(&c.src));
                                prop_assert!(!before.contains(&c.dst));
                            }
                            l.tokens.extend((0..u32::from(n)).map(|k| 50_000 + k));
                            l.computed = total;
                            m.commit(&mut l.table, &l.tokens, total);
                        }
                        Err(_) => prop_assert_eq!(l.table.blocks(), &before[..]),
                    }
                }
                Op::Fork { pick } if !live.is_empty() => {
                    let i = pick as usize % live.len();
                    let table = m.fork(&live[i].table);
                    let (tokens, computed) = (live[i].tokens.clone(), live[i].computed);
                    live.push(Live { table, tokens, computed });
                }
                Op::Free { pick } if !live.is_empty() => {
                    let i = pick as usize % live.len();
                    let mut l = live.swap_remove(i);
                    m.free(&mut l.table);
                    prop_assert!(l.table.is_empty());
                }
                _ => {}
            }
            check(&m, &live, capacity);
        }
        for mut l in live.drain(..) {
            m.free(&mut l.table);
        }
        check(&m, &live, capacity);
        prop_assert_eq!(m.num_free_blocks(), capacity);
    }
}
