//! Recycled byte buffers: [`BufferPool::share`] turns a `Vec<u8>` into [`Bytes`] that put the
//! allocation back in the pool once the last clone is dropped, on whatever thread that happens.
//!
//! Throughput over loopback is lost less to copying than to fresh memory: a large buffer freed
//! and allocated again is typically handed back to the kernel by the allocator (trimmed) and
//! faulted in page by page on its next use. A reassembled message (up to the maximum message
//! size) or a receive buffer of the driver (up to 64 KiB) is taken from the pool instead, and
//! comes back to it when the application drops the last `Bytes` over it. The pool holds at most a
//! fixed number of bytes of capacity; beyond that a returning buffer is freed.

use std::sync::{Arc, Mutex, MutexGuard, Weak};

use bytes::Bytes;

/// Buffers waiting to be used again, with the bytes of capacity they hold.
#[derive(Debug, Default)]
struct Free {
    buffers: Vec<Vec<u8>>,
    capacity: usize,
    max_capacity: usize,
}

/// A pool of byte buffers; clones share the pool.
#[derive(Debug, Clone)]
pub struct BufferPool {
    free: Arc<Mutex<Free>>,
}

impl BufferPool {
    /// A pool that keeps at most `max_capacity` bytes of capacity.
    pub fn new(max_capacity: usize) -> BufferPool {
        let free = Free {
            max_capacity,
            ..Free::default()
        };
        BufferPool {
            free: Arc::new(Mutex::new(free)),
        }
    }

    /// A buffer from the pool (with whatever length and contents it was put back with), the
    /// most recently returned first; `None` if the pool is empty.
    pub fn take(&self) -> Option<Vec<u8>> {
        let mut free = lock(&self.free);
        let buffer = free.buffers.pop()?;
        free.capacity -= buffer.capacity();
        Some(buffer)
    }

    /// Puts `buffer` in the pool, or frees it if the pool is full.
    pub fn put(&self, buffer: Vec<u8>) {
        put(&self.free, buffer);
    }

    /// `buffer`'s contents as [`Bytes`]; the buffer goes back to the pool (length and contents
    /// kept) when the last clone or slice of them is dropped.
    pub fn share(&self, buffer: Vec<u8>) -> Bytes {
        Bytes::from_owner(Pooled {
            buffer,
            pool: Arc::downgrade(&self.free),
        })
    }

    /// Bytes of capacity the pool holds.
    pub fn pooled_bytes(&self) -> usize {
        lock(&self.free).capacity
    }
}

fn lock(free: &Mutex<Free>) -> MutexGuard<'_, Free> {
    free.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn put(free: &Mutex<Free>, buffer: Vec<u8>) {
    let mut free = lock(free);
    if buffer.capacity() > 0 && free.capacity + buffer.capacity() <= free.max_capacity {
        free.capacity += buffer.capacity();
        free.buffers.push(buffer);
    }
}

/// The owner behind a shared buffer's [`Bytes`].
struct Pooled {
    buffer: Vec<u8>,
    pool: Weak<Mutex<Free>>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buffer
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(free) = self.pool.upgrade() {
            put(&free, std::mem::take(&mut self.buffer));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_buffer_comes_back_when_its_last_slice_is_dropped() {
        let pool = BufferPool::new(1000);
        let bytes = pool.share(vec![1, 2, 3, 4]);
        let slice = bytes.slice(1..3);
        drop(bytes);
        assert_eq!(pool.take(), None, "a slice still holds it");
        assert_eq!(&slice[..], [2, 3]);
        drop(slice);
        assert_eq!(pool.take(), Some(vec![1, 2, 3, 4]));
        assert_eq!(pool.pooled_bytes(), 0);
    }

    #[test]
    fn the_pool_keeps_at_most_its_capacity() {
        let pool = BufferPool::new(100);
        pool.put(Vec::with_capacity(60));
        pool.put(Vec::with_capacity(60));
        assert_eq!(pool.pooled_bytes(), 60);
        drop(pool.share(Vec::with_capacity(40)));
        assert_eq!(pool.pooled_bytes(), 100);
        let outlived = pool.share(vec![0; 10]);
        drop(pool);
        drop(outlived); // the pool is gone: freed
    }
}
