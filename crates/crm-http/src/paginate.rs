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
use std::task::{Context, Poll};

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
    PrefetchStream { rx, task }.boxed()
}

struct PrefetchStream<T> {
    rx: mpsc::Receiver<T>,
    task: JoinHandle<()>,
}

impl<T> Stream for PrefetchStream<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.rx.poll_recv(cx)
    }
}

impl<T> Drop for PrefetchStream<T> {
    fn drop(&mut self) {
        self.task.abort();
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
