//! The [`Observer`] trait and its no-op, fan-out and recording implementations.

use std::sync::{Arc, Mutex, PoisonError};

use crate::{
    CacheEvent, CompileEvent, Event, ExecutionReport, ExecutionStart, HealthChange,
    InstantiateEvent, ModuleInfo, PoolEvent, RuntimeEvent, SecurityEvent,
};

/// Something that watches the sandbox: metrics, tracing, health, or a test.
///
/// Observers are called on the execution path, synchronously, once per event. They must be
/// cheap and must never block: update a counter, record a histogram sample, push onto a
/// bounded queue. Anything slow (network I/O, serialisation) belongs on the observer's own
/// task, fed from that queue.
pub trait Observer: Send + Sync {
    /// Called once for every event.
    fn on_event(&self, event: &Event<'_>);
}

impl<T: Observer + ?Sized> Observer for Arc<T> {
    fn on_event(&self, event: &Event<'_>) {
        (**self).on_event(event)
    }
}

impl<T: Observer + ?Sized> Observer for Box<T> {
    fn on_event(&self, event: &Event<'_>) {
        (**self).on_event(event)
    }
}

/// An observer that ignores everything: the default when nobody is watching.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopObserver;

impl Observer for NoopObserver {
    fn on_event(&self, _event: &Event<'_>) {}
}

/// Delivers each event to several observers, in the order they were given.
#[derive(Clone, Default)]
pub struct FanOut {
    observers: Vec<Arc<dyn Observer>>,
}

impl FanOut {
    /// A fan-out over these observers.
    pub fn new(observers: Vec<Arc<dyn Observer>>) -> Self {
        FanOut { observers }
    }

    /// Adds one more observer.
    pub fn push(&mut self, observer: Arc<dyn Observer>) {
        self.observers.push(observer);
    }

    /// How many observers events go to.
    pub fn len(&self) -> usize {
        self.observers.len()
    }

    /// Whether there are no observers at all.
    pub fn is_empty(&self) -> bool {
        self.observers.is_empty()
    }
}

impl std::fmt::Debug for FanOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanOut")
            .field("observers", &self.observers.len())
            .finish()
    }
}

impl Observer for FanOut {
    fn on_event(&self, event: &Event<'_>) {
        for observer in &self.observers {
            observer.on_event(event);
        }
    }
}

/// An owned copy of an [`Event`], as kept by [`RecordingObserver`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RecordedEvent {
    /// See [`Event::CompileStarted`].
    CompileStarted(String),
    /// See [`Event::ModuleCompiled`].
    ModuleCompiled(CompileEvent),
    /// See [`Event::ModuleRejected`].
    ModuleRejected {
        /// The name the bytes were offered under.
        name: String,
        /// Why they were rejected.
        reason: String,
    },
    /// See [`Event::InstanceCreated`].
    InstanceCreated(InstantiateEvent),
    /// See [`Event::InstanceDestroyed`].
    InstanceDestroyed(ModuleInfo),
    /// See [`Event::ExecutionStarted`].
    ExecutionStarted(ExecutionStart),
    /// See [`Event::ExecutionFinished`].
    ExecutionFinished(Box<ExecutionReport>),
    /// See [`Event::Security`].
    Security(SecurityEvent),
    /// See [`Event::HealthChanged`].
    HealthChanged(HealthChange),
    /// See [`Event::Cache`].
    Cache(CacheEvent),
    /// See [`Event::Pool`].
    Pool(PoolEvent),
    /// See [`Event::Runtime`].
    Runtime(RuntimeEvent),
}

impl RecordedEvent {
    /// An owned copy of an event.
    pub fn from_event(event: &Event<'_>) -> Self {
        match *event {
            Event::CompileStarted { name } => RecordedEvent::CompileStarted(name.to_owned()),
            Event::ModuleCompiled(e) => RecordedEvent::ModuleCompiled(e.clone()),
            Event::ModuleRejected { name, reason } => RecordedEvent::ModuleRejected {
                name: name.to_owned(),
                reason: reason.to_owned(),
            },
            Event::InstanceCreated(e) => RecordedEvent::InstanceCreated(e.clone()),
            Event::InstanceDestroyed { module } => RecordedEvent::InstanceDestroyed(module.clone()),
            Event::ExecutionStarted(s) => RecordedEvent::ExecutionStarted(s.clone()),
            Event::ExecutionFinished(r) => RecordedEvent::ExecutionFinished(Box::new(r.clone())),
            Event::Security(e) => RecordedEvent::Security(e.clone()),
            Event::HealthChanged(e) => RecordedEvent::HealthChanged(e.clone()),
            Event::Cache(e) => RecordedEvent::Cache(e.clone()),
            Event::Pool(e) => RecordedEvent::Pool(e.clone()),
            Event::Runtime(e) => RecordedEvent::Runtime(e.clone()),
        }
    }
}

/// An observer that keeps a copy of every event: the test double for the [`Observer`] trait.
#[derive(Debug, Default)]
pub struct RecordingObserver {
    events: Mutex<Vec<RecordedEvent>>,
}

impl RecordingObserver {
    /// Every event seen so far, oldest first.
    pub fn events(&self) -> Vec<RecordedEvent> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The reports of every finished execution seen so far.
    pub fn reports(&self) -> Vec<ExecutionReport> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                RecordedEvent::ExecutionFinished(r) => Some(*r),
                _ => None,
            })
            .collect()
    }

    /// Every security event seen so far.
    pub fn security_events(&self) -> Vec<SecurityEvent> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                RecordedEvent::Security(s) => Some(s),
                _ => None,
            })
            .collect()
    }

    /// Forgets everything seen so far.
    pub fn clear(&self) {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

impl Observer for RecordingObserver {
    fn on_event(&self, event: &Event<'_>) {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(RecordedEvent::from_event(event));
    }
}
