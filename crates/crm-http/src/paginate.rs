//! Turning "fetch the page for this token" into a `Stream` of pages.
//!
//! A provider implements [`PageFetcher`] (or passes a closure to
//! [`fetcher_fn`]); [`paginate`] drives it. Paging stops when a page has no
//! next token, whatever else the API says (a `has_more: true` next to a
//! missing cursor ends the stream too). A page that hands back the token it
//! was fetched with, or more pages than [`PaginateOptions::max_pages`], ends
//! the stream with an error instead of looping or truncating silently.
//!
//! ```
//! use futures_util::StreamExt;
//! use crm_http::paginate::{fetcher_fn, paginate, FetchedPage, PaginateOptions};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> crm_core::Result<()> {
//! // A cursor API over 0..10, three items per page; the token is the offset.
//! let fetcher = fetcher_fn(|offset: Option<u32>| async move {
//!     let start = offset.unwrap_or(0);
//!     let items: Vec<u32> = (start..(start + 3).min(10)).collect();
//!     let next = (start + 3 < 10).then_some(start + 3);
//!     Ok(FetchedPage::new(items, next))
//! });
//! let mut pages = paginate(fetcher, None, PaginateOptions::default());
//! let mut all = Vec::new();
//! while let Some(page) = pages.next().await {
//!     let page = page?;
//!     // Checkpoint `page.next` once the page's items are stored.
//!     all.extend(page.items);
//! }
//! assert_eq!(all, (0..10).collect::<Vec<_>>());
//! # Ok(()) }
//! ```

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use crm_core::{Error, ErrorKind, Result};
use futures_core::Stream;
use futures_util::stream::{self, BoxStream, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// One page: its items, the token it was fetched with, and the token of the
/// next page (`None` on the last page).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct FetchedPage<T, K> {
    /// The page's items.
    pub items: Vec<T>,
    /// The token of the next page; `None` ends the stream.
    pub next: Option<K>,
    /// The token this page was fetched with (`None` for the first page);
    /// filled in by [`paginate`].
    pub token: Option<K>,
}

impl<T, K> FetchedPage<T, K> {
    /// A page of `items` followed by the page at `next`.
    pub fn new(items: Vec<T>, next: Option<K>) -> Self {
        FetchedPage {
            items,
            next,
            token: None,
        }
    }
}

/// A provider's "fetch the page for this token".
pub trait PageFetcher: Send + Sync + 'static {
    /// What a page holds.
    type Item: Send + 'static;
    /// The page token (cursor, offset, URL...).
    type Token: Clone + PartialEq + Send + Sync + 'static;

    /// Fetches the page at `token` (`None`: the first page).
    fn fetch(
        &self,
        token: Option<Self::Token>,
    ) -> impl Future<Output = Result<FetchedPage<Self::Item, Self::Token>>> + Send;
}

/// A [`PageFetcher`] made from a closure; see [`fetcher_fn`].
pub struct FnFetcher<F, T, K> {
    f: F,
    _types: PhantomData<fn(Option<K>) -> T>,
}

impl<F, T, K> std::fmt::Debug for FnFetcher<F, T, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FnFetcher")
    }
}

/// Makes a [`PageFetcher`] of a closure `Fn(Option<K>) -> impl Future<Output = Result<FetchedPage<T, K>>>`.
pub fn fetcher_fn<F, Fut, T, K>(f: F) -> FnFetcher<F, T, K>
where
    F: Fn(Option<K>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<FetchedPage<T, K>>> + Send,
    T: Send + 'static,
    K: Clone + PartialEq + Send + Sync + 'static,
{
    FnFetcher {
        f,
        _types: PhantomData,
    }
}

impl<F, Fut, T, K> PageFetcher for FnFetcher<F, T, K>
where
    F: Fn(Option<K>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<FetchedPage<T, K>>> + Send,
    T: Send + 'static,
    K: Clone + PartialEq + Send + Sync + 'static,
{
    type Item = T;
    type Token = K;

    fn fetch(&self, token: Option<K>) -> impl Future<Output = Result<FetchedPage<T, K>>> + Send {
        (self.f)(token)
    }
}

/// How [`paginate`] fetches.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PaginateOptions {
    /// Pages fetched ahead of the consumer (default 1). With 0, a page is
    /// fetched only when the stream is polled; with n > 0 a background task
    /// fetches while the consumer works, never more than n pages ahead.
    pub prefetch: usize,
    /// The most pages to fetch; past it the stream ends with an
    /// [`ErrorKind::Permanent`] error rather than stopping silently.
    pub max_pages: Option<u64>,
}

impl Default for PaginateOptions {
    fn default() -> Self {
        PaginateOptions {
            prefetch: 1,
            max_pages: None,
        }
    }
}

impl PaginateOptions {
    /// Sets the prefetch depth.
    #[must_use]
    pub fn prefetch(mut self, pages: usize) -> Self {
        self.prefetch = pages;
        self
    }

    /// Sets the page limit.
    #[must_use]
    pub fn max_pages(mut self, pages: u64) -> Self {
        self.max_pages = Some(pages);
        self
    }
}

type PageResult<F> = Result<FetchedPage<<F as PageFetcher>::Item, <F as PageFetcher>::Token>>;

/// Where paging stands.
struct Cursor<K> {
    token: Option<K>,
    pages: u64,
}

/// Fetches one page; returns it and the cursor of the next, `None` at the end.
async fn step<F: PageFetcher>(
    fetcher: &F,
    cursor: Cursor<F::Token>,
    max_pages: Option<u64>,
) -> (PageResult<F>, Option<Cursor<F::Token>>) {
    if let Some(max) = max_pages
        && cursor.pages >= max
    {
        let err = Error::new(
            ErrorKind::Permanent,
            format!("more than {max} pages; stopping instead of truncating"),
        )
        .with_operation("paginate");
        return (Err(err), None);
    }
    match fetcher.fetch(cursor.token.clone()).await {
        Err(e) => (Err(e), None),
        Ok(mut page) => {
            page.token = cursor.token;
            let next = match &page.next {
                None => None,
                Some(next) if page.token.as_ref() == Some(next) => {
                    let err = Error::new(
                        ErrorKind::Permanent,
                        "the provider returned the same page token again",
                    )
                    .with_operation("paginate")
                    .with_context("page", cursor.pages + 1);
                    return (Err(err), None);
                }
                Some(next) => Some(Cursor {
                    token: Some(next.clone()),
                    pages: cursor.pages + 1,
                }),
            };
            (Ok(page), next)
        }
    }
}

/// A `Stream` of the pages of `fetcher`, starting at `start` (`None`: the
/// first page). The stream ends after a page without a next token, or after
/// the first error.
///
/// The stream never ends early without saying so: if the fetch panics in the
/// background task (`prefetch > 0`), the pages fetched before it are
/// followed by an [`ErrorKind::Permanent`] error (an
/// [`ErrorKind::Transient`] one if the task was cancelled by a runtime
/// shutting down). With `prefetch == 0` the fetch runs in the consumer's
/// `poll_next`, so its panic unwinds into the consumer.
///
/// ```
/// use futures_util::StreamExt;
/// use crm_http::paginate::{fetcher_fn, paginate, FetchedPage, PaginateOptions};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> crm_core::Result<()> {
/// // Pages of two letters; the token is the index of the next page.
/// let letters = ["a", "b", "c", "d", "e"];
/// let fetcher = fetcher_fn(move |page: Option<usize>| async move {
///     let start = page.unwrap_or(0) * 2;
///     let items = letters[start..(start + 2).min(letters.len())].to_vec();
///     let next = (start + 2 < letters.len()).then(|| start / 2 + 1);
///     Ok(FetchedPage::new(items, next))
/// });
/// // Fetch up to two pages ahead of the consumer; fail past 100 pages.
/// let options = PaginateOptions::default().prefetch(2).max_pages(100);
/// let mut pages = paginate(fetcher, None, options);
/// let mut read = String::new();
/// while let Some(page) = pages.next().await {
///     read.extend(page?.items); // an `Err` is a failed read, never a short one
/// }
/// assert_eq!(read, "abcde");
/// # Ok(()) }
/// ```
///
/// # Cancel safety
/// Dropping the stream stops the background fetch (with `prefetch > 0`, the
/// task is aborted); pages fetched but not yet taken are discarded, so
/// checkpoint only tokens of pages you processed.
///
/// # Panics
/// With `prefetch > 0`, must be called within a tokio runtime (it spawns
/// the prefetching task).
pub fn paginate<F: PageFetcher>(
    fetcher: F,
    start: Option<F::Token>,
    options: PaginateOptions,
) -> BoxStream<'static, PageResult<F>> {
    let fetcher = Arc::new(fetcher);
    let first = Cursor {
        token: start,
        pages: 0,
    };
    let max_pages = options.max_pages;
    if options.prefetch == 0 {
        return stream::unfold(Some(first), move |cursor| {
            let fetcher = Arc::clone(&fetcher);
            async move {
                let (page, next) = step(&*fetcher, cursor?, max_pages).await;
                Some((page, next))
            }
        })
        .boxed();
    }
    let (tx, rx) = mpsc::channel(options.prefetch);
    let task = tokio::spawn(async move {
        let mut cursor = Some(first);
        while let Some(current) = cursor {
            // Reserve before fetching: at most `prefetch` pages are fetched
            // or waiting ahead of the consumer.
            let Ok(permit) = tx.reserve().await else {
                return;
            };
            let (page, next) = step(&*fetcher, current, max_pages).await;
            permit.send(page);
            cursor = next;
        }
    });
    PrefetchStream {
        rx,
        task: Some(task),
        pages: 0,
    }
    .boxed()
}

/// The consumer's end of the prefetching task.
///
/// The channel closes when the task ends, whether it finished or not: the
/// task's outcome is what tells a complete read from a fetch that panicked
/// (or was cancelled) half-way, so after the last page the stream waits for
/// the task and turns a failure into a final error item.
struct PrefetchStream<T> {
    rx: mpsc::Receiver<Result<T>>,
    /// `None` once the task's outcome has been read.
    task: Option<JoinHandle<()>>,
    /// Pages handed to the consumer so far, for the error's context.
    pages: u64,
}

impl<T> Stream for PrefetchStream<T> {
    type Item = Result<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<T>>> {
        let this = self.get_mut();
        if let Some(item) = ready!(this.rx.poll_recv(cx)) {
            this.pages += 1;
            return Poll::Ready(Some(item));
        }
        // Every page the task sent has been taken; did it end normally?
        let Some(task) = this.task.as_mut() else {
            return Poll::Ready(None);
        };
        let outcome = ready!(Pin::new(task).poll(cx));
        this.task = None;
        match outcome {
            Ok(()) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(task_failure(&e, this.pages)))),
        }
    }
}

/// The error that ends a stream whose prefetching task did not finish.
fn task_failure(e: &tokio::task::JoinError, pages: u64) -> Error {
    let err = if e.is_panic() {
        // A bug in the provider's fetch: retrying will not fix it.
        Error::new(
            ErrorKind::Permanent,
            "the paginator's background page fetch panicked; \
             the read stopped before the last page",
        )
    } else {
        // Cancelled: only a runtime shutting down does that while the
        // stream is alive; in a live runtime a retry may succeed.
        Error::new(
            ErrorKind::Transient,
            "the paginator's background page fetch was cancelled \
             (runtime shutting down?); the read stopped before the last page",
        )
    };
    err.with_operation("paginate")
        .with_context("pages_read", pages)
}

impl<T> Drop for PrefetchStream<T> {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    fn numbers(
        total: u32,
        per_page: u32,
        fetches: Arc<AtomicU32>,
    ) -> impl PageFetcher<Item = u32, Token = u32> {
        fetcher_fn(move |offset: Option<u32>| {
            let fetches = Arc::clone(&fetches);
            async move {
                fetches.fetch_add(1, Ordering::SeqCst);
                let start = offset.unwrap_or(0);
                let end = (start + per_page).min(total);
                Ok(FetchedPage::new(
                    (start..end).collect(),
                    (end < total).then_some(end),
                ))
            }
        })
    }

    #[tokio::test]
    async fn every_item_once_in_order_for_any_prefetch() {
        for prefetch in [0, 1, 3] {
            let fetches = Arc::new(AtomicU32::new(0));
            let pages: Vec<_> = paginate(
                numbers(25, 10, Arc::clone(&fetches)),
                None,
                PaginateOptions::default().prefetch(prefetch),
            )
            .collect()
            .await;
            let pages: Vec<_> = pages.into_iter().map(Result::unwrap).collect();
            assert_eq!(pages.len(), 3);
            assert_eq!(pages[0].token, None);
            assert_eq!(pages[1].token, Some(10));
            assert_eq!(pages[2].next, None);
            let items: Vec<u32> = pages.into_iter().flat_map(|p| p.items).collect();
            assert_eq!(items, (0..25).collect::<Vec<_>>());
            assert_eq!(fetches.load(Ordering::SeqCst), 3);
        }
    }

    #[tokio::test]
    async fn stops_without_next_token_whatever_else() {
        // The page claims nothing about the end, but has no next token.
        let fetches = Arc::new(AtomicU32::new(0));
        let f = Arc::clone(&fetches);
        let fetcher = fetcher_fn(move |_: Option<u32>| {
            let f = Arc::clone(&f);
            async move {
                f.fetch_add(1, Ordering::SeqCst);
                Ok(FetchedPage::new(vec![1, 2, 3], None))
            }
        });
        let pages: Vec<_> = paginate(fetcher, None, PaginateOptions::default())
            .collect()
            .await;
        assert_eq!(pages.len(), 1);
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn prefetch_is_bounded() {
        for prefetch in [1usize, 2] {
            let fetches = Arc::new(AtomicU32::new(0));
            let mut pages = paginate(
                numbers(1000, 1, Arc::clone(&fetches)),
                None,
                PaginateOptions::default().prefetch(prefetch),
            );
            let first = pages.next().await.unwrap().unwrap();
            assert_eq!(first.items, vec![0]);
            // Let the background task run as far as it can.
            tokio::time::sleep(Duration::from_secs(1)).await;
            let n = fetches.load(Ordering::SeqCst);
            assert_eq!(n as usize, 1 + prefetch, "prefetch {prefetch}");
            drop(pages);
        }
    }

    #[tokio::test]
    async fn repeated_token_and_page_limit_are_errors() {
        let stuck = fetcher_fn(|_: Option<u32>| async { Ok(FetchedPage::new(vec![1], Some(7))) });
        let pages: Vec<_> = paginate(stuck, None, PaginateOptions::default())
            .collect()
            .await;
        assert_eq!(pages.len(), 2);
        assert!(pages[0].is_ok());
        assert_eq!(pages[1].as_ref().unwrap_err().kind(), &ErrorKind::Permanent);

        let fetches = Arc::new(AtomicU32::new(0));
        let pages: Vec<_> = paginate(
            numbers(100, 10, Arc::clone(&fetches)),
            None,
            PaginateOptions::default().max_pages(3).prefetch(0),
        )
        .collect()
        .await;
        assert_eq!(pages.len(), 4);
        assert!(pages[3].is_err());
        assert_eq!(fetches.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn errors_end_the_stream() {
        let fetcher = fetcher_fn(|token: Option<u32>| async move {
            match token {
                None => Ok(FetchedPage::new(vec![1], Some(1))),
                Some(_) => Err(Error::new(ErrorKind::Transient, "503")),
            }
        });
        let pages: Vec<_> = paginate(fetcher, None, PaginateOptions::default())
            .collect()
            .await;
        assert_eq!(pages.len(), 2);
        assert!(pages[1].is_err());
    }

    /// Pages of one item; fetching page 3 (token 2) panics, in the closure
    /// itself or in the future it returns.
    fn panics_on_page_3(in_future: bool) -> impl PageFetcher<Item = u32, Token = u32> {
        fetcher_fn(move |token: Option<u32>| {
            let page = token.unwrap_or(0);
            assert!(in_future || page != 2, "provider bug on page 3");
            async move {
                assert!(page != 2, "provider bug on page 3");
                Ok(FetchedPage::new(vec![page], Some(page + 1)))
            }
        })
    }

    #[tokio::test]
    async fn a_panicking_fetch_is_an_error_not_an_end() {
        for prefetch in [1, 2, 5] {
            for in_future in [false, true] {
                let mut pages = paginate(
                    panics_on_page_3(in_future),
                    None,
                    PaginateOptions::default().prefetch(prefetch),
                );
                let mut seen = Vec::new();
                while let Some(page) = pages.next().await {
                    seen.push(page);
                }
                let case = format!("prefetch {prefetch}, in_future {in_future}");
                assert_eq!(seen.len(), 3, "{case}");
                assert_eq!(seen[0].as_ref().unwrap().items, vec![0], "{case}");
                assert_eq!(seen[1].as_ref().unwrap().items, vec![1], "{case}");
                let err = seen[2].as_ref().unwrap_err();
                assert_eq!(err.kind(), &ErrorKind::Permanent, "{case}");
                assert_eq!(err.operation(), Some("paginate"), "{case}");
                assert!(err.message().contains("panicked"), "{case}: {err}");
                assert_eq!(err.context_value("pages_read"), Some("2"), "{case}");
                // Ended for good after the error.
                assert!(pages.next().await.is_none(), "{case}");
            }
        }
    }

    #[tokio::test]
    async fn without_prefetch_a_panic_reaches_the_consumer() {
        use futures_util::FutureExt;
        use std::panic::AssertUnwindSafe;

        for in_future in [false, true] {
            let mut pages = paginate(
                panics_on_page_3(in_future),
                None,
                PaginateOptions::default().prefetch(0),
            );
            assert_eq!(pages.next().await.unwrap().unwrap().items, vec![0]);
            assert_eq!(pages.next().await.unwrap().unwrap().items, vec![1]);
            let third = AssertUnwindSafe(pages.next()).catch_unwind().await;
            assert!(third.is_err(), "the panic unwinds into the consumer");
            // Even a consumer that catches the panic and polls on never
            // sees a clean end.
            let again = AssertUnwindSafe(pages.next()).catch_unwind().await;
            assert!(again.is_err(), "polled after the panic: {again:?}");
        }
    }

    #[test]
    fn a_cancelled_fetch_task_is_an_error_not_an_end() {
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        };
        // Page 2 never arrives; the runtime shuts down while it is fetched.
        let fetcher = fetcher_fn(|token: Option<u32>| async move {
            if token.is_some() {
                std::future::pending::<()>().await;
            }
            Ok(FetchedPage::new(vec![1], Some(1)))
        });
        let first = runtime();
        let mut pages = first.block_on(async {
            let mut pages = paginate(fetcher, None, PaginateOptions::default());
            assert!(pages.next().await.unwrap().is_ok());
            pages
        });
        drop(first); // cancels the prefetching task
        let (next, after) = runtime().block_on(async { (pages.next().await, pages.next().await) });
        let err = next.unwrap().unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::Transient);
        assert_eq!(err.operation(), Some("paginate"));
        assert!(err.message().contains("cancelled"), "{err}");
        assert!(after.is_none());
    }

    #[tokio::test]
    async fn a_complete_read_ends_cleanly_and_stays_ended() {
        for prefetch in [0, 1, 4] {
            let fetches = Arc::new(AtomicU32::new(0));
            let mut pages = paginate(
                numbers(7, 2, Arc::clone(&fetches)),
                None,
                PaginateOptions::default().prefetch(prefetch),
            );
            let mut items = Vec::new();
            while let Some(page) = pages.next().await {
                items.extend(page.unwrap().items);
            }
            assert_eq!(items, (0..7).collect::<Vec<_>>(), "prefetch {prefetch}");
            if prefetch > 0 {
                // Polled again after the end: still the end, no error.
                assert!(pages.next().await.is_none(), "prefetch {prefetch}");
            }
        }
    }

    #[tokio::test]
    async fn resumes_from_a_token() {
        let fetches = Arc::new(AtomicU32::new(0));
        let pages: Vec<_> = paginate(
            numbers(30, 10, fetches),
            Some(20),
            PaginateOptions::default(),
        )
        .collect()
        .await;
        assert_eq!(pages.len(), 1);
        assert_eq!(
            pages[0].as_ref().unwrap().items,
            (20..30).collect::<Vec<_>>()
        );
    }
}
