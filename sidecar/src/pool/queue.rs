//! The FIFO of checkouts waiting for a connection. Each waiter has a place that holds its
//! deadline, its waker and, once it is served or refused, its answer: the waiter finds the
//! answer there under the pool's lock. Places are reused, so waiting allocates nothing once
//! the queue has been as long before (a channel per wait allocated and freed one each time).

use std::collections::VecDeque;
use std::task::Waker;

use tokio::time::Instant;

use super::state::Grant;

/// Why a waiter got no connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Its pool_timeout passed first.
    TimedOut,
    /// The pool was shut down.
    Closed,
}

/// What a waiter hears.
pub type Answer<C> = Result<Grant<C>, Refused>;

/// A waiter's claim on its place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    index: usize,
    id: u64,
}

#[derive(Debug)]
struct Place<C> {
    id: u64,
    deadline: Instant,
    waker: Option<Waker>,
    answer: Option<Answer<C>>,
}

/// The queue.
#[derive(Debug)]
pub struct WaitQueue<C> {
    places: Vec<Option<Place<C>>>,
    free: Vec<usize>,
    /// Places still waiting, oldest first.
    order: VecDeque<usize>,
    next_id: u64,
}

impl<C> Default for WaitQueue<C> {
    fn default() -> Self {
        Self {
            places: Vec::new(),
            free: Vec::new(),
            order: VecDeque::new(),
            next_id: 0,
        }
    }
}

impl<C> WaitQueue<C> {
    /// Waiters not yet answered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Nobody waiting.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// A place at the back, until `deadline`.
    pub fn push(&mut self, deadline: Instant) -> Ticket {
        let id = self.next_id;
        self.next_id += 1;
        let place = Place {
            id,
            deadline,
            waker: None,
            answer: None,
        };
        let index = match self.free.pop() {
            Some(i) => {
                self.places[i] = Some(place);
                i
            }
            None => {
                self.places.push(Some(place));
                self.places.len() - 1
            }
        };
        self.order.push_back(index);
        Ticket { index, id }
    }

    /// Hand `grant` to the waiter at the front; it comes back with nobody waiting.
    pub fn serve_front(&mut self, grant: Grant<C>) -> Option<Grant<C>> {
        match self.order.pop_front() {
            Some(i) => {
                self.answer(i, Ok(grant));
                None
            }
            None => Some(grant),
        }
    }

    fn answer(&mut self, index: usize, answer: Answer<C>) {
        if let Some(p) = self.places[index].as_mut() {
            p.answer = Some(answer);
            if let Some(w) = p.waker.take() {
                w.wake();
            }
        }
    }

    /// Refuse every waiter with `why`.
    pub fn refuse_all(&mut self, why: Refused) {
        while let Some(i) = self.order.pop_front() {
            self.answer(i, Err(why));
        }
    }

    /// Time out the waiters whose deadline is `now` or earlier; the earliest deadline left.
    pub fn expire(&mut self, now: Instant) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut k = 0;
        while let Some(&i) = self.order.get(k) {
            let deadline = self.places[i].as_ref().map_or(now, |p| p.deadline);
            if deadline > now {
                next = Some(next.map_or(deadline, |n| n.min(deadline)));
                k += 1;
            } else {
                self.order.remove(k);
                self.answer(i, Err(Refused::TimedOut));
            }
        }
        next
    }

    /// The answer for `ticket`, which gives up its place; else `waker` is woken when it comes.
    /// A ticket whose place is gone (its answer was taken already) is refused rather than
    /// left waiting for ever.
    pub fn poll_answer(&mut self, ticket: Ticket, waker: &Waker) -> Option<Answer<C>> {
        let Some(place) = self.place(ticket) else {
            return Some(Err(Refused::Closed));
        };
        if let Some(answer) = place.answer.take() {
            self.vacate(ticket.index);
            return Some(answer);
        }
        if !place.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            place.waker = Some(waker.clone());
        }
        None
    }

    /// The waiter gives up: its place is left, and a grant that already came is handed back
    /// for the caller to return to the pool.
    pub fn leave(&mut self, ticket: Ticket) -> Option<Grant<C>> {
        let answer = self.place(ticket)?.answer.take();
        if answer.is_none()
            && let Some(k) = self.order.iter().position(|i| *i == ticket.index)
        {
            self.order.remove(k);
        }
        self.vacate(ticket.index);
        answer.and_then(Result::ok)
    }

    fn place(&mut self, ticket: Ticket) -> Option<&mut Place<C>> {
        self.places
            .get_mut(ticket.index)?
            .as_mut()
            .filter(|p| p.id == ticket.id)
    }

    fn vacate(&mut self, index: usize) {
        self.places[index] = None;
        self.free.push(index);
    }
}
