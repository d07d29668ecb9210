//! The simulation loop: an hour at a time, people meet, phones hear each other, the disease
//! spreads, positives upload through the provider and app APIs, the server publishes, and
//! phones download and match on their own schedule. GAEN's part is here; the encounter-token
//! protocol's is in `tokens`, driven from the same loop over the same people, contacts and
//! uploaders, and the sniffers are in `sniffer`.
//!
//! Random streams are forked per purpose, so that a part added later (the token path, the
//! sniffers, the areas) draws from its own stream and changes none of GAEN's draws.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use confidant_client::download::{ExportDownloader, ExportStream, FeedDownloader};
use confidant_client::observations::{ObservationStore, Sighting};
use confidant_client::risk::ExposureConfiguration;
use confidant_client::schedule::KeySchedule;
use confidant_client::upload::{CovidShieldApi, NativeApi, ProviderApi};
use confidant_core::Region;
use gaen::{DiagnosisKey, IntervalNumber, Rpi};

use crate::SimError;
use crate::model::{
    DAY, Encounter, HOUR, Health, PersonId, Places, Population, Protocol, SimSettings, closeness,
};
use crate::report::{GroundTruth, Report, Tally, TokenReport};
use crate::rng::SeededRng;
use crate::sniffer::Sniffer;
use crate::target::{Cdn, EdgeFetch, Server, Target};
use crate::tokens::{Contact, Stay, TokenWorld};

/// Transmission risk level the simulated app attaches to uploaded keys.
const TRANSMISSION_RISK: u8 = 4;
/// How far a sighting's time may be from its RPI's interval and still match.
const TOLERANCE_SECONDS: u64 = 2 * HOUR;
/// Uploads in flight at once.
const UPLOAD_CONCURRENCY: usize = 32;

/// Progress: hours simulated out of the total.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

struct Phone {
    schedule: KeySchedule,
    store: ObservationStore,
    notified_at: Option<u64>,
    /// Uploads whose keys this phone matched, with when.
    matched: BTreeMap<usize, u64>,
}

/// One positive user's upload.
pub(crate) struct Upload {
    pub person: PersonId,
    pub at: u64,
    pub tracking_id: Option<String>,
    pub keys: Vec<DiagnosisKey>,
    pub withdrawn_at: Option<u64>,
}

/// Phones that download at the same hour share a position in the feed and in the export
/// index, so they download the same files: one downloader per hour of the day stands for
/// all of them.
struct SyncGroup {
    members: Vec<PersonId>,
    feed: FeedDownloader<EdgeFetch>,
    feed_edge: EdgeFetch,
    exports: ExportDownloader<EdgeFetch>,
    export_edge: EdgeFetch,
}

enum Action {
    BecomeInfectious(PersonId),
    Recover(PersonId),
    TestResult(PersonId),
    Withdraw(usize),
}

pub async fn simulate(
    settings: SimSettings,
    target: Target,
    progress: Progress<'_>,
) -> Result<Report, SimError> {
    settings.validate().map_err(SimError::Settings)?;
    let began = Instant::now();
    let mut server = Server::start(target).await?;
    let result = run(&settings, &mut server, progress, began).await;
    server.stop().await;
    result
}

async fn run(
    settings: &SimSettings,
    server: &mut Server,
    progress: Progress<'_>,
    began: Instant,
) -> Result<Report, SimError> {
    let mut rng = SeededRng::new(settings.seed);
    let mut population = Population::generate(settings, &mut rng.fork(1));
    let mut contact_rng = rng.fork(2);
    let mut health_rng = rng.fork(3);
    let mut radio_rng = rng.fork(4);
    let token_radio = rng.fork(5);
    let token_rng = rng.fork(6);
    let places = Places::generate(settings, &population, &mut rng.fork(7), &mut rng.fork(8));
    let gaen_on = settings.protocol.gaen();
    let mut phones: Vec<Option<Phone>> = population
        .people
        .iter()
        .enumerate()
        .map(|(id, person)| {
            (gaen_on && person.app).then(|| {
                let mut seed = [0u8; 32];
                seed[..8].copy_from_slice(&settings.seed.to_le_bytes());
                seed[8..12].copy_from_slice(&(id as u32).to_le_bytes());
                Phone {
                    schedule: KeySchedule::from_seed(seed),
                    store: ObservationStore::new(),
                    notified_at: None,
                    matched: BTreeMap::new(),
                }
            })
        })
        .collect();

    let region = Region::try_from("SIM".to_owned()).map_err(SimError::Settings)?;
    let (provider_id, provider_token) = server.register_provider(&region).await?;
    let provider = ProviderApi::new(&server.url, &provider_token)?;
    let config = exposure_configuration(server, &region).await?;
    let cdn = Cdn::new(&server.url)?;
    let mut groups: Vec<SyncGroup> = Vec::with_capacity(24);
    for hour in (0..24u8).filter(|_| gaen_on) {
        let feed_edge = cdn.edge();
        let export_edge = cdn.edge();
        groups.push(SyncGroup {
            members: (0..population.people.len() as PersonId)
                .filter(|&id| {
                    let person = &population.people[id as usize];
                    person.app && person.sync_hour == hour
                })
                .collect(),
            feed: FeedDownloader::new(feed_edge.clone(), region.clone(), server.public_key.clone()),
            feed_edge,
            exports: ExportDownloader::new(
                export_edge.clone(),
                region.clone(),
                server.public_key.clone(),
                ExportStream::Hourly,
            ),
            export_edge,
        });
    }

    // Day 0 starts at the first midnight (UTC) after the server's time.
    let start = server.now().div_ceil(DAY) * DAY;
    let total_days = u64::from(settings.days + settings.drain_days);
    let total_hours = total_days * 24;
    let mut tokens = match settings.protocol.tokens() {
        true => Some(TokenWorld::new(
            settings,
            &population,
            &places,
            server,
            provider_id,
            token_rng,
            token_radio,
            total_days as usize,
        )?),
        false => None,
    };
    let mut sniffer = Sniffer::new(&places);
    let mut epochs: Option<tokio::task::JoinHandle<TokenWorld>> = None;
    if let Some(world) = &tokens
        && places.sniffed.contains(&true)
    {
        // The sniffers download from a CDN of their own: their requests are not the phones'.
        sniffer.follow_lists(
            Cdn::new(&server.url)?.edge(),
            world.regions(),
            server.public_key.clone(),
        );
    }
    let mut agenda: BTreeMap<u64, Vec<Action>> = BTreeMap::new();
    let mut uploads: Vec<Upload> = Vec::new();
    let mut key_owner: HashMap<[u8; 16], usize> = HashMap::new();
    let mut received: HashMap<(u8, [u8; 16]), u64> = HashMap::new();
    let mut published: HashSet<[u8; 16]> = HashSet::new();
    let mut contacts: Vec<Encounter> = Vec::new();
    let mut tally = Tally::new(total_days as usize);

    // Seed the epidemic: people infected at the start, already infectious a day later.
    let mut seeded = std::collections::BTreeSet::new();
    while seeded.len() < settings.initial_infections {
        seeded.insert(health_rng.below(population.people.len() as u64) as PersonId);
    }
    for &id in &seeded {
        infect(
            &mut population,
            id,
            start,
            settings,
            &mut health_rng,
            &mut agenda,
            start,
        );
        tally.infections[0] += 1;
    }

    let mut encounters: Vec<Encounter> = Vec::new();
    let mut next_encounter = 0;
    let mut index = KeyIndex::default();
    let mut origin_counted = 0;
    for hour_index in 0..total_hours {
        let now = start + hour_index * HOUR;
        let day = (hour_index / 24) as usize;
        let hour_of_day = (hour_index % 24) as u8;
        server.set_time(now).await?;
        if hour_of_day == 0 {
            index.forget_before(now.saturating_sub(15 * DAY));
            encounters = if day < settings.days as usize {
                population.encounters(now, &mut contact_rng)
            } else {
                Vec::new()
            };
            next_encounter = 0;
        }

        // Health events and test results due this hour.
        let mut due_uploads = Vec::new();
        for action in agenda.remove(&hour_index).unwrap_or_default() {
            match action {
                Action::BecomeInfectious(id) => {
                    let params = &settings.epidemic;
                    let symptomatic = health_rng.chance(params.symptomatic_share);
                    population.people[id as usize].health = Health::Infectious { symptomatic };
                    let infectious =
                        health_rng.between(params.infectious_hours.0, params.infectious_hours.1);
                    schedule(&mut agenda, hour_index + infectious, Action::Recover(id));
                    if symptomatic {
                        let onset = health_rng
                            .between(params.presymptomatic_hours.0, params.presymptomatic_hours.1);
                        let delay = health_rng
                            .between(params.test_delay_hours.0, params.test_delay_hours.1);
                        test_at(&mut population, &mut agenda, id, hour_index + onset + delay);
                    }
                }
                Action::Recover(id) => population.people[id as usize].health = Health::Recovered,
                Action::TestResult(id) => {
                    let person = &mut population.people[id as usize];
                    person.test_scheduled = false;
                    let infected =
                        matches!(person.health, Health::Exposed | Health::Infectious { .. });
                    if infected && person.tested_positive_at.is_none() {
                        person.tested_positive_at = Some(now);
                        person.isolating_from = Some(now);
                        tally.positives[day] += 1;
                        // Uploads end with the epidemic's days: the quiet days after only
                        // let published keys reach every phone.
                        if person.app
                            && day < settings.days as usize
                            && health_rng.chance(settings.upload_share)
                        {
                            due_uploads.push(id);
                        }
                    }
                }
                Action::Withdraw(index) => {
                    if let Some(tracking_id) = &uploads[index].tracking_id {
                        server.withdraw(tracking_id).await?;
                        tally.api_requests += 1;
                        tally.api_requests_per_day[day] += 1;
                        uploads[index].withdrawn_at = Some(now);
                        tally.withdrawn += 1;
                    }
                }
            }
        }

        // Positive app users get a code from the test centre and upload.
        for chunk in due_uploads.chunks(UPLOAD_CONCURRENCY).filter(|_| gaen_on) {
            let mut tasks = tokio::task::JoinSet::new();
            for &id in chunk {
                let phone = phones[id as usize].as_mut().expect("uploaders run the app");
                let keys = phone.schedule.keys_for_upload(now, TRANSMISSION_RISK);
                let covid_shield = health_rng.chance(settings.covid_shield_share);
                let provider = provider.clone();
                let url = server.url.clone();
                tasks.spawn(async move {
                    let code = provider.issue_code().await?;
                    let tracking_id = if covid_shield {
                        let mut app = CovidShieldApi::new(&url)?;
                        app.claim(&code).await?;
                        app.upload(&keys, now).await?;
                        None
                    } else {
                        let app = NativeApi::new(&url)?;
                        let token = app.verify(&code).await?;
                        Some(app.submit(&token, &keys).await?.tracking_id)
                    };
                    Ok::<_, confidant_client::ClientError>((id, keys, tracking_id))
                });
            }
            while let Some(joined) = tasks.join_next().await {
                let (id, keys, tracking_id) = joined
                    .map_err(|e| SimError::Server(format!("an upload task failed: {e}")))??;
                // A code from the provider API, then a redemption and an upload.
                tally.api_requests += 3;
                tally.api_requests_per_day[day] += 3;
                let index = uploads.len();
                for key in &keys {
                    key_owner.insert(key.tek.0, index);
                }
                tally.uploads[day] += 1;
                if tracking_id.is_some() && health_rng.chance(settings.withdraw_share) {
                    schedule(
                        &mut agenda,
                        hour_index + settings.withdraw_after_hours.max(1),
                        Action::Withdraw(index),
                    );
                }
                uploads.push(Upload {
                    person: id,
                    at: now,
                    tracking_id,
                    keys,
                    withdrawn_at: None,
                });
            }
        }
        if !gaen_on {
            tally.uploads[day] += due_uploads.len() as u64;
            // The draws the GAEN uploads make, so that the health stream stays GAEN's.
            for chunk in due_uploads.chunks(UPLOAD_CONCURRENCY) {
                let native = chunk
                    .iter()
                    .filter(|_| !health_rng.chance(settings.covid_shield_share))
                    .count();
                for _ in 0..native {
                    health_rng.chance(settings.withdraw_share);
                }
            }
        }
        // The token phones' epochs of the last hour, computed while the server published.
        if let Some(task) = epochs.take() {
            tokens =
                Some(task.await.map_err(|e| {
                    SimError::Server(format!("the token phones' epochs failed: {e}"))
                })?);
        }
        // The same people upload their encounter tokens, with a TAN.
        if let Some(world) = &mut tokens {
            world.upload(server, now, day, &due_uploads).await?;
        }

        // This hour's encounters: transmission, and phones hearing each other.
        while next_encounter < encounters.len() && encounters[next_encounter].start < now + HOUR {
            let encounter = encounters[next_encounter];
            next_encounter += 1;
            transmit(
                &mut population,
                &encounter,
                settings,
                &mut health_rng,
                &mut agenda,
                start,
                &mut tally,
            );
            let app = |id: PersonId| population.people[id as usize].app;
            if app(encounter.a) && app(encounter.b) {
                contacts.push(encounter);
                let a_heard = hear(
                    &mut phones,
                    &encounter,
                    encounter.a,
                    encounter.b,
                    settings,
                    &mut radio_rng,
                );
                let b_heard = hear(
                    &mut phones,
                    &encounter,
                    encounter.b,
                    encounter.a,
                    settings,
                    &mut radio_rng,
                );
                if let Some(world) = &mut tokens {
                    world.add_contact(Contact {
                        a: encounter.a,
                        b: encounter.b,
                        start: encounter.start,
                        end: encounter.start + u64::from(encounter.seconds),
                        attenuation_db: encounter.attenuation_db,
                        area: places.area_of(&population, &encounter),
                        heard: [a_heard, b_heard],
                    });
                }
            }
            if let Some(place) = places.sniffed_place(&population, &encounter) {
                for id in [encounter.a, encounter.b].into_iter().filter(|&id| app(id)) {
                    if let Some(phone) = phones[id as usize].as_mut() {
                        sniff(&mut sniffer, phone, &encounter, place, id);
                    }
                    if let Some(world) = &mut tokens {
                        world.add_stay(Stay {
                            person: id,
                            place,
                            start: encounter.start,
                            end: encounter.start + u64::from(encounter.seconds),
                        });
                    }
                }
            }
        }

        // Phones whose download hour this is: fetch, match, notify.
        if let Some(group) = groups.get_mut(hour_of_day as usize) {
            let update = group.feed.sync().await?;
            let export = group.exports.sync().await?;
            let members = group.members.len() as u64;
            tally.feed_bytes[day] += group.feed_edge.take_bytes() * members;
            tally.export_bytes[day] += group.export_edge.take_bytes() * members;
            tally.phone_syncs[day] += members;
            // Both carry padding keys of their own; the uploaded keys must be the same.
            let uploaded = |key: &[u8; 16]| key_owner.contains_key(key);
            let mut feed_keys: Vec<[u8; 16]> = update
                .added
                .iter()
                .map(|k| k.tek.0)
                .filter(uploaded)
                .collect();
            // Hourly exports and feed deltas are cut from the same windows: the same keys, once
            // keys withdrawn in between are left out of both.
            let revoked: HashSet<[u8; 16]> = export.revoked.iter().map(|k| k.0).collect();
            let mut export_keys: Vec<[u8; 16]> = export
                .keys
                .iter()
                .map(|k| k.tek.0)
                .filter(|k| !revoked.contains(k) && uploaded(k))
                .collect();
            feed_keys.sort_unstable();
            export_keys.sort_unstable();
            for key in &update.added {
                sniffer.published_key(key);
                received.entry((hour_of_day, key.tek.0)).or_insert(now);
                if published.insert(key.tek.0) {
                    tally.keys_published[day] += 1;
                }
            }
            // Padding keys are random: they can match no sighting. A phone cannot tell them apart
            // and derives them all (`confidant bench match` measures that); the simulation skips
            // them, which changes no result and saves most of its memory.
            let wanted: HashSet<u32, RandomBits> = update
                .added
                .iter()
                .filter(|key| key_owner.contains_key(&key.tek.0))
                .map(|key| index.add(key))
                .collect();
            if !wanted.is_empty() {
                let mut newly_notified = Vec::new();
                for &id in &group.members {
                    let phone = phones[id as usize].as_mut().expect("members run the app");
                    let matches: Vec<(DiagnosisKey, &Sighting)> = phone
                        .store
                        .sightings()
                        .iter()
                        .filter_map(|s| index.find(s, &wanted).map(|key| (*key, s)))
                        .collect();
                    if matches.is_empty() {
                        continue;
                    }
                    let exposures = confidant_client::risk::exposures(matches, &config, now);
                    for exposure in &exposures {
                        if let Some(&upload) = key_owner.get(&exposure.key.tek.0) {
                            phone.matched.entry(upload).or_insert(now);
                        }
                    }
                    if !exposures.is_empty() && phone.notified_at.is_none() {
                        phone.notified_at = Some(now);
                        tally.notifications[day] += 1;
                        newly_notified.push(id);
                    }
                }
                for id in newly_notified {
                    react(
                        &mut population,
                        &mut agenda,
                        &mut health_rng,
                        settings,
                        id,
                        (now, hour_index),
                    );
                }
            }
            if feed_keys != export_keys {
                tally.download_mismatches += 1;
            }
            for &id in &group.members {
                let phone = phones[id as usize].as_mut().expect("members run the app");
                phone.store.prune(now);
                phone.schedule.prune(now);
            }
        }
        if let Some(world) = &mut tokens {
            let newly = world.sync(hour_of_day, now, day).await?;
            // With both protocols, people react to the GAEN app only.
            if settings.protocol == Protocol::Tokens {
                for id in newly {
                    react(
                        &mut population,
                        &mut agenda,
                        &mut health_rng,
                        settings,
                        id,
                        (now, hour_index),
                    );
                }
            }
            world.end_hour(day);
            if hour_of_day == 23 {
                sniffer.collect_lists().await?;
            }
        }
        // The token phones hear each other, epoch by epoch, on other threads: the next hour's
        // publication and health events need none of it.
        if let Some(mut world) = tokens.take() {
            epochs = Some(tokio::task::spawn_blocking(move || {
                world.hour(now, day);
                world
            }));
        }
        let origin = cdn
            .origin_requests
            .load(std::sync::atomic::Ordering::Relaxed);
        tally.file_requests_per_day[day] += origin - origin_counted;
        origin_counted = origin;
        progress(hour_index + 1, total_hours);
    }

    tally.origin_requests = cdn
        .origin_requests
        .load(std::sync::atomic::Ordering::Relaxed);
    if let Some(task) = epochs.take() {
        tokens = Some(
            task.await
                .map_err(|e| SimError::Server(format!("the token phones' epochs failed: {e}")))?,
        );
    }
    if let Some(world) = &mut tokens {
        sniffer.record_keys(world.take_sniffed());
    }
    let (truth, gaen_exposed) = match gaen_on {
        true => ground_truth(
            &population,
            &phones,
            &uploads,
            &contacts,
            &received,
            &config,
        ),
        false => (GroundTruth::default(), HashSet::new()),
    };
    let gaen_uploaders: std::collections::BTreeSet<PersonId> =
        uploads.iter().map(|u| u.person).collect();
    let token_uploaders = tokens
        .as_ref()
        .map(|world| world.uploaders.keys().copied().collect());
    let sniffed = sniffer.report(gaen_on.then_some(&gaen_uploaders), token_uploaders.as_ref());
    let app_users = population.people.iter().filter(|p| p.app).count();
    let token_report = tokens.as_ref().map(|world| {
        let truth = world.ground_truth(&population, &places, &contacts);
        let (direct, level1, level1_only) = world.notified();
        let mut report = TokenReport::new(
            settings,
            world.tally.clone(),
            truth,
            app_users,
            (level1, level1_only),
        );
        if gaen_on {
            report.gaen_exposed = Some(gaen_exposed.len());
            report.gaen_exposed_warned =
                Some(gaen_exposed.iter().filter(|id| direct.contains(id)).count());
        }
        report
    });
    Ok(Report::new(
        settings,
        &population,
        tally,
        truth,
        token_report,
        sniffed,
        began.elapsed().as_secs_f64(),
    ))
}

/// A notified person stays home from now, and most get tested.
fn react(
    population: &mut Population,
    agenda: &mut BTreeMap<u64, Vec<Action>>,
    rng: &mut SeededRng,
    settings: &SimSettings,
    id: PersonId,
    (now, hour_index): (u64, u64),
) {
    let person = &mut population.people[id as usize];
    person.isolating_from.get_or_insert(now);
    if rng.chance(settings.epidemic.notified_tested_share) {
        let delay = rng.between(
            settings.epidemic.test_delay_hours.0,
            settings.epidemic.test_delay_hours.1,
        );
        test_at(population, agenda, id, hour_index + delay);
    }
}

/// A sniffer in `place` records the RPIs `phone` broadcasts during `encounter`: one per
/// 10-minute interval.
fn sniff(
    sniffer: &mut Sniffer,
    phone: &mut Phone,
    encounter: &Encounter,
    place: u32,
    id: PersonId,
) {
    let end = encounter.start + u64::from(encounter.seconds);
    let mut at = encounter.start;
    while at < end {
        sniffer.record_rpi(place, phone.schedule.broadcast(at).0, id);
        at = ((IntervalNumber::containing(at).get() as u64 + 1) * 600).min(end);
    }
}

fn schedule(agenda: &mut BTreeMap<u64, Vec<Action>>, hour_index: u64, action: Action) {
    agenda.entry(hour_index).or_default().push(action);
}

fn test_at(
    population: &mut Population,
    agenda: &mut BTreeMap<u64, Vec<Action>>,
    id: PersonId,
    hour_index: u64,
) {
    let person = &mut population.people[id as usize];
    if person.test_scheduled || person.tested_positive_at.is_some() {
        return;
    }
    person.test_scheduled = true;
    schedule(agenda, hour_index, Action::TestResult(id));
}

fn infect(
    population: &mut Population,
    id: PersonId,
    at: u64,
    settings: &SimSettings,
    rng: &mut SeededRng,
    agenda: &mut BTreeMap<u64, Vec<Action>>,
    start: u64,
) {
    let person = &mut population.people[id as usize];
    person.health = Health::Exposed;
    person.infected_at = Some(at);
    let latent = rng.between(
        settings.epidemic.latent_hours.0,
        settings.epidemic.latent_hours.1,
    );
    let hour_index = (at - start) / HOUR + latent;
    schedule(agenda, hour_index, Action::BecomeInfectious(id));
}

fn transmit(
    population: &mut Population,
    encounter: &Encounter,
    settings: &SimSettings,
    rng: &mut SeededRng,
    agenda: &mut BTreeMap<u64, Vec<Action>>,
    start: u64,
    tally: &mut Tally,
) {
    let health = |id: PersonId| population.people[id as usize].health;
    // Only the susceptible one can be infected, by the infectious one.
    let target = match (health(encounter.a), health(encounter.b)) {
        (Health::Infectious { .. }, Health::Susceptible) => encounter.b,
        (Health::Susceptible, Health::Infectious { .. }) => encounter.a,
        _ => return,
    };
    let minutes = f64::from(encounter.seconds) / 60.0;
    let rate = settings.epidemic.transmission_per_minute * closeness(encounter.attenuation_db);
    if rng.chance(1.0 - (-rate * minutes).exp()) {
        infect(
            population,
            target,
            encounter.start,
            settings,
            rng,
            agenda,
            start,
        );
        tally.infections[((encounter.start - start) / DAY) as usize] += 1;
    }
}

/// Whether `listener`'s phone hears `speaker`'s during `encounter`: per 10-minute interval,
/// with the detection probability. Its GAEN phone (if it runs one) records a sighting per
/// interval heard. Returns the intervals heard as bits (bit i: the i-th interval of the
/// encounter), for the token phones, which hear with the same radio.
fn hear(
    phones: &mut [Option<Phone>],
    encounter: &Encounter,
    listener: PersonId,
    speaker: PersonId,
    settings: &SimSettings,
    rng: &mut SeededRng,
) -> u32 {
    let end = encounter.start + u64::from(encounter.seconds);
    let mut at = encounter.start;
    let mut heard = 0u32;
    let mut interval = 0;
    while at < end {
        let interval_end = (IntervalNumber::containing(at).get() as u64 + 1) * 600;
        let until = interval_end.min(end);
        if rng.chance(settings.detection) {
            heard |= 1u32.checked_shl(interval).unwrap_or(0);
            let noise = i16::from(settings.attenuation_noise_db);
            let measured = i16::from(encounter.attenuation_db)
                + (rng.below((2 * noise + 1) as u64) as i16 - noise);
            if phones[listener as usize].is_some()
                && let Some(phone) = phones[speaker as usize].as_mut()
            {
                let (rpi, aem) = phone.schedule.broadcast(at);
                phones[listener as usize]
                    .as_mut()
                    .expect("checked above")
                    .store
                    .record(Sighting {
                        rpi,
                        aem,
                        first_seen: at,
                        duration_seconds: (until - at) as u32,
                        attenuation_db: measured.clamp(0, 255) as u8,
                    });
            }
        }
        interval += 1;
        at = until;
    }
    heard
}

async fn exposure_configuration(
    server: &Server,
    region: &Region,
) -> Result<ExposureConfiguration, SimError> {
    let url = format!(
        "{}/exposure-configuration/{}.json",
        server.url,
        region.as_str()
    );
    let response = server
        .http
        .get(&url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| SimError::Server(format!("GET {url}: {e}")))?;
    response
        .json()
        .await
        .map_err(|e| SimError::Server(format!("the exposure configuration is not valid: {e}")))
}

/// The RPIs of every published key, each derived once and shared by all phones: the same
/// matching a phone does with the gaen engine, turned around so that a thousand phones cost
/// one derivation. A phone only matches the keys its own download brought.
#[derive(Default)]
struct KeyIndex {
    keys: Vec<DiagnosisKey>,
    ids: HashMap<[u8; 16], u32, RandomBits>,
    rpis: HashMap<Rpi, (u32, IntervalNumber), RandomBits>,
}

impl KeyIndex {
    /// The key's number, deriving its RPIs the first time it is seen.
    fn add(&mut self, key: &DiagnosisKey) -> u32 {
        if let Some(&id) = self.ids.get(&key.tek.0) {
            return id;
        }
        let id = self.keys.len() as u32;
        let batch = key
            .tek
            .rpi_key()
            .rpis(key.rolling_start, key.rolling_period.get());
        for (interval, rpi) in batch.iter() {
            self.rpis.insert(rpi, (id, interval));
        }
        self.ids.insert(key.tek.0, id);
        self.keys.push(*key);
        id
    }

    /// The key among `wanted` that explains `sighting`, if any.
    fn find(
        &self,
        sighting: &Sighting,
        wanted: &HashSet<u32, RandomBits>,
    ) -> Option<&DiagnosisKey> {
        let &(id, interval) = self.rpis.get(&sighting.rpi)?;
        let from = interval
            .start_unix_seconds()
            .saturating_sub(TOLERANCE_SECONDS);
        let to = interval.start_unix_seconds() + 600 + TOLERANCE_SECONDS;
        (wanted.contains(&id) && (from..to).contains(&sighting.first_seen))
            .then(|| &self.keys[id as usize])
    }

    /// Forgets the RPIs of keys that ended before `at`: no phone remembers them.
    fn forget_before(&mut self, at: u64) {
        let keys = &self.keys;
        self.rpis.retain(|_, (id, _)| {
            let key = &keys[*id as usize];
            u64::from(key.rolling_start.get() + key.rolling_period.get()) * 600 >= at
        });
    }
}

/// Hashes RPIs and key data by their first eight bytes: they are uniformly random already,
/// and SipHash over millions of them was most of a simulation's time.
#[derive(Clone, Copy, Default)]
struct RandomBits;

impl std::hash::BuildHasher for RandomBits {
    type Hasher = FirstWord;
    fn build_hasher(&self) -> FirstWord {
        FirstWord(0)
    }
}

struct FirstWord(u64);

impl std::hash::Hasher for FirstWord {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut word = [0u8; 8];
        let n = bytes.len().min(8);
        word[..n].copy_from_slice(&bytes[..n]);
        self.0 = self.0.rotate_left(29) ^ u64::from_le_bytes(word);
    }

    // Slice lengths are the same for every key: they add nothing.
    fn write_usize(&mut self, _: usize) {}
}

/// The authority's criterion applied to a true contact: scored as on the day it happened.
fn qualifies(config: &ExposureConfiguration, seconds: u64, attenuation_db: u8) -> bool {
    let seconds = u32::try_from(seconds).unwrap_or(u32::MAX);
    let score = config.score(attenuation_db, seconds, 0, TRANSMISSION_RISK);
    score > 0 && score >= config.minimum_risk_score
}

/// Who was truly exposed: app users whose contacts with an uploader, while one of the keys
/// that uploader uploaded was valid, add up to a score at or above the authority's minimum,
/// computed from the true durations and distances. Contacts older than the phones' 14-day
/// memory by the time the key reached the phone cannot be found by any phone and are counted
/// apart.
fn ground_truth(
    population: &Population,
    phones: &[Option<Phone>],
    uploads: &[Upload],
    contacts: &[Encounter],
    received: &HashMap<(u8, [u8; 16]), u64>,
    config: &ExposureConfiguration,
) -> (GroundTruth, HashSet<PersonId>) {
    let mut by_uploader: HashMap<PersonId, Vec<usize>> = HashMap::new();
    for (index, upload) in uploads.iter().enumerate() {
        by_uploader.entry(upload.person).or_default().push(index);
    }
    // (exposed person, upload, day) -> (seconds, minimum attenuation, earliest start)
    let mut exposure: HashMap<(PersonId, usize, u64), (u64, u8, u64)> = HashMap::new();
    for contact in contacts {
        for (uploader, exposed) in [(contact.a, contact.b), (contact.b, contact.a)] {
            let Some(indices) = by_uploader.get(&uploader) else {
                continue;
            };
            for &index in indices {
                let upload = &uploads[index];
                // Covered: while the uploaded key of that day was valid.
                let day = contact.start / DAY;
                let Some(key) = upload
                    .keys
                    .iter()
                    .find(|k| u64::from(k.rolling_start.get()) * 600 / DAY == day)
                else {
                    continue;
                };
                let valid_until =
                    u64::from(key.rolling_start.get() + key.rolling_period.get()) * 600;
                let end = (contact.start + u64::from(contact.seconds)).min(valid_until);
                if contact.start >= end {
                    continue;
                }
                let entry = exposure
                    .entry((exposed, index, contact.start / DAY))
                    .or_insert((0, u8::MAX, u64::MAX));
                entry.0 += end - contact.start;
                entry.1 = entry.1.min(contact.attenuation_db);
                entry.2 = entry.2.min(contact.start);
            }
        }
    }
    let mut truth = GroundTruth::default();
    let mut exposed_by: HashMap<PersonId, Vec<usize>> = HashMap::new();
    for (&(person, index, day), &(seconds, attenuation, earliest)) in &exposure {
        if !qualifies(config, seconds, attenuation) {
            continue;
        }
        let upload = &uploads[index];
        let phone = phones[person as usize]
            .as_ref()
            .expect("contacts are between app users");
        if let Some(withdrawn) = upload.withdrawn_at {
            match phone.matched.get(&index) {
                // The rollback reaches phones with the next hourly publication.
                Some(&matched) if matched <= withdrawn + HOUR => {
                    truth.matched_before_withdrawal += 1
                }
                Some(_) => truth.matched_after_withdrawal += 1,
                None => truth.spared_by_withdrawal += 1,
            }
            continue;
        }
        let group = population.people[person as usize].sync_hour;
        let arrived = upload
            .keys
            .iter()
            .find(|k| u64::from(k.rolling_start.get()) * 600 / DAY == day)
            .and_then(|k| received.get(&(group, k.tek.0)));
        match arrived {
            None => truth.never_arrived += 1,
            Some(&arrived) if earliest + 15 * DAY <= arrived => truth.forgotten += 1,
            Some(_) => exposed_by.entry(person).or_default().push(index),
        }
    }
    let exposed: HashSet<PersonId> = exposed_by.keys().copied().collect();
    let mut notified = HashSet::new();
    for (id, phone) in phones.iter().enumerate() {
        let Some(phone) = phone else { continue };
        let by_kept = phone
            .matched
            .keys()
            .any(|&index| uploads[index].withdrawn_at.is_none());
        if by_kept {
            notified.insert(id as PersonId);
        } else if phone.notified_at.is_some() {
            truth.notified_by_withdrawn_only += 1;
        }
    }
    truth.exposed = exposed.len();
    truth.notified = notified.len();
    truth.true_positives = exposed.intersection(&notified).count();
    for &id in exposed.intersection(&notified) {
        let phone = phones[id as usize].as_ref().expect("notified phones exist");
        let notified_at = phone.notified_at.unwrap_or(0);
        let first_upload = exposed_by[&id]
            .iter()
            .map(|&index| uploads[index].at)
            .min()
            .unwrap_or(notified_at);
        truth
            .delays_hours
            .push(notified_at.saturating_sub(first_upload) as f64 / 3600.0);
    }
    truth.missed = exposed.difference(&notified).copied().collect();
    truth.false_alarms = notified.difference(&exposed).copied().collect();
    (truth, exposed)
}
