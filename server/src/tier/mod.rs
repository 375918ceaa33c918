//! Parts of the fleet tier that front remote endpoints: the cross-machine
//! KV prefix index and the subscriber for vLLM's KV-event publisher.

pub mod kv_index;
pub mod vllm_events;
