pub mod fuzz;
pub mod gguf_writer;
