//! The simulated world: who lives with whom, who works or studies where, how the disease
//! moves, and the parameters of all of it. Pure and seeded: no I/O, no clock.

use serde::Serialize;

use crate::rng::SeededRng;

pub type PersonId = u32;

pub const MINUTE: u64 = 60;
pub const HOUR: u64 = 3600;
pub const DAY: u64 = 86_400;
/// Most neighbourhoods (token areas) a city may have.
pub const MAX_AREAS: u8 = 32;

/// Everything a run depends on besides the server. The same settings and seed give the same
/// run.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SimSettings {
    pub population: usize,
    /// Days of epidemic. The run continues `drain_days` more without new contacts, so that
    /// the last uploads are published and reach every phone.
    pub days: u32,
    pub drain_days: u32,
    pub seed: u64,
    /// Share of people who run the app.
    pub adoption: f64,
    /// Probability that a phone hears a nearby phone's broadcast in a 10-minute interval.
    pub detection: f64,
    /// Spread of the attenuation a phone measures around the true one, in dB (uniform ±).
    pub attenuation_noise_db: u8,
    /// Share of positive app users who upload their keys.
    pub upload_share: f64,
    /// Share of uploads through the COVID Shield protocol; the rest use the native API.
    pub covid_shield_share: f64,
    /// Share of submissions the health authority rolls back, `withdraw_after_hours` after
    /// the upload (a wrong upload, found later).
    pub withdraw_share: f64,
    pub withdraw_after_hours: u64,
    /// People infected on day 0.
    pub initial_infections: usize,
    pub epidemic: EpidemicParams,
    /// Which tracing protocol the phones run.
    pub protocol: Protocol,
    /// Share of workplaces and school classes where a passive Bluetooth sniffer records every
    /// broadcast.
    pub sniffed_places: f64,
    /// Neighbourhoods, each its own encounter-token area (postal-code prefix). People live
    /// in one, work or study in one, and meet strangers in the stranger's.
    pub areas: u8,
    /// Encounter tokens: a phone notified at level 0 uploads its own encounters with the
    /// matched preimage, so that its contacts are notified at level 1.
    pub chain: bool,
}

/// The tracing protocol of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Protocol {
    /// Exposure Notification keys (native feed and hourly exports).
    Gaen,
    /// Encounter tokens (`docs/encounter-tokens.md`).
    Tokens,
    /// Both on every phone, over one epidemic: people react to the GAEN app's notifications,
    /// so that the GAEN figures are those of a GAEN-only run and both protocols face the same
    /// contacts, infections and uploaders.
    Both,
}

impl Protocol {
    pub fn gaen(self) -> bool {
        matches!(self, Self::Gaen | Self::Both)
    }

    pub fn tokens(self) -> bool {
        matches!(self, Self::Tokens | Self::Both)
    }
}

impl SimSettings {
    pub fn new(population: usize, days: u32, seed: u64) -> Self {
        Self {
            population,
            days,
            drain_days: 3,
            seed,
            adoption: 0.6,
            detection: 0.9,
            attenuation_noise_db: 6,
            upload_share: 0.8,
            covid_shield_share: 0.25,
            withdraw_share: 0.0,
            withdraw_after_hours: 12,
            initial_infections: (population / 500).max(3),
            epidemic: EpidemicParams::default(),
            protocol: Protocol::Gaen,
            sniffed_places: 0.1,
            areas: 1,
            chain: false,
        }
    }

    /// Every phone hears every nearby phone and measures attenuation exactly; every positive
    /// app user uploads. Under these conditions every truly exposed app user must be notified,
    /// and no one else.
    pub fn perfect(mut self) -> Self {
        self.detection = 1.0;
        self.attenuation_noise_db = 0;
        self.upload_share = 1.0;
        self
    }

    pub fn validate(&self) -> Result<(), String> {
        let shares = [
            ("adoption", self.adoption),
            ("detection", self.detection),
            ("upload share", self.upload_share),
            ("COVID Shield share", self.covid_shield_share),
            ("withdraw share", self.withdraw_share),
            ("sniffed share of places", self.sniffed_places),
        ];
        for (name, value) in shares {
            if !(0.0..=1.0).contains(&value) {
                return Err(format!("the {name} must be between 0 and 1, got {value}"));
            }
        }
        if self.population < 2 {
            return Err("the population must be at least 2 people".into());
        }
        if self.population > 10_000_000 {
            return Err("the population is at most 10,000,000 people".into());
        }
        if self.days == 0 || self.days > 120 {
            return Err(format!("days must be 1 to 120, got {}", self.days));
        }
        if !(1..=MAX_AREAS).contains(&self.areas) {
            return Err(format!(
                "areas must be 1 to {MAX_AREAS}, got {}",
                self.areas
            ));
        }
        if self.initial_infections == 0 || self.initial_infections > self.population {
            return Err(format!(
                "initial infections must be 1 to the population, got {}",
                self.initial_infections
            ));
        }
        Ok(())
    }
}

/// SEIR with a presymptomatic phase: exposed (latent), infectious (presymptomatic, then
/// symptomatic or not), recovered. Durations are drawn uniformly from the ranges.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EpidemicParams {
    /// Probability of infection per minute of contact at close range (attenuation ≤ 55 dB);
    /// farther contacts transmit less (see [`closeness`]).
    pub transmission_per_minute: f64,
    pub latent_hours: (u64, u64),
    pub presymptomatic_hours: (u64, u64),
    pub infectious_hours: (u64, u64),
    pub symptomatic_share: f64,
    /// From symptom onset (or from a notification) to a positive result.
    pub test_delay_hours: (u64, u64),
    /// Share of notified app users who get tested.
    pub notified_tested_share: f64,
}

impl Default for EpidemicParams {
    fn default() -> Self {
        Self {
            transmission_per_minute: 0.003,
            latent_hours: (48, 96),
            presymptomatic_hours: (24, 48),
            infectious_hours: (120, 192),
            symptomatic_share: 0.65,
            test_delay_hours: (24, 72),
            notified_tested_share: 0.8,
        }
    }
}

/// How much a contact at this attenuation transmits, relative to close range.
pub fn closeness(attenuation_db: u8) -> f64 {
    match attenuation_db {
        0..=55 => 1.0,
        56..=63 => 0.5,
        64..=73 => 0.2,
        _ => 0.05,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Setting {
    Household,
    Work,
    School,
    Random,
}

/// Two people near each other for a while. Encounters never cross midnight (UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Encounter {
    pub a: PersonId,
    pub b: PersonId,
    /// Unix seconds.
    pub start: u64,
    pub seconds: u32,
    /// True attenuation: the distance, as the radio sees it.
    pub attenuation_db: u8,
    pub setting: Setting,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Susceptible,
    Exposed,
    Infectious { symptomatic: bool },
    Recovered,
}

pub struct Person {
    pub household: u32,
    /// Workplace or school group, if any.
    pub group: Option<(Setting, u32)>,
    pub app: bool,
    /// Hour of day (UTC) at which this person's phone downloads and matches.
    pub sync_hour: u8,
    pub health: Health,
    pub infected_at: Option<u64>,
    /// Stays home (household contacts only) from this time: a positive test or a
    /// notification.
    pub isolating_from: Option<u64>,
    pub tested_positive_at: Option<u64>,
    /// A test is pending (from symptoms or a notification).
    pub test_scheduled: bool,
}

/// The people and the places that bring them together.
pub struct Population {
    pub people: Vec<Person>,
    /// Members of each household.
    pub households: Vec<Vec<PersonId>>,
    /// Members of each workplace or school group.
    pub groups: Vec<(Setting, Vec<PersonId>)>,
}

impl Population {
    /// Households of 1 to 5 (mean about 2.3), a third of people in school classes of ~25,
    /// half in workplaces of 5 to 40, everyone meeting a few strangers a day.
    pub fn generate(settings: &SimSettings, rng: &mut SeededRng) -> Self {
        let n = settings.population;
        let mut people = Vec::with_capacity(n);
        let mut households = Vec::new();
        // Household sizes roughly as in European censuses.
        const SIZES: [(u64, usize); 5] = [(35, 1), (33, 2), (14, 3), (12, 4), (6, 5)];
        while people.len() < n {
            let roll = rng.below(100);
            let mut acc = 0;
            let mut size = 1;
            for (share, s) in SIZES {
                acc += share;
                if roll < acc {
                    size = s;
                    break;
                }
            }
            let size = size.min(n - people.len());
            let household = households.len() as u32;
            let members: Vec<PersonId> = (people.len()..people.len() + size)
                .map(|i| i as PersonId)
                .collect();
            for _ in 0..size {
                people.push(Person {
                    household,
                    group: None,
                    app: rng.chance(settings.adoption),
                    sync_hour: rng.below(24) as u8,
                    health: Health::Susceptible,
                    infected_at: None,
                    isolating_from: None,
                    tested_positive_at: None,
                    test_scheduled: false,
                });
            }
            households.push(members);
        }
        let mut groups: Vec<(Setting, Vec<PersonId>)> = Vec::new();
        let mut open: Option<(Setting, usize, usize)> = None; // (setting, group index, target size)
        let mut order: Vec<PersonId> = (0..n as PersonId).collect();
        shuffle(&mut order, rng);
        for id in order {
            let setting = match rng.below(100) {
                0..=29 => Setting::School,
                30..=79 => Setting::Work,
                _ => continue,
            };
            let index = match open {
                Some((s, index, target)) if s == setting && groups[index].1.len() < target => index,
                _ => {
                    let target = match setting {
                        Setting::School => rng.between(18, 30),
                        _ => rng.between(5, 40),
                    } as usize;
                    groups.push((setting, Vec::new()));
                    open = Some((setting, groups.len() - 1, target));
                    groups.len() - 1
                }
            };
            groups[index].1.push(id);
            people[id as usize].group = Some((setting, index as u32));
        }
        Self {
            people,
            households,
            groups,
        }
    }

    /// The day's encounters, sorted by start. Isolating people meet their household only.
    pub fn encounters(&self, day_start: u64, rng: &mut SeededRng) -> Vec<Encounter> {
        let mut out = Vec::new();
        let weekday = ((day_start / DAY) + 4) % 7 < 5; // 1970-01-01 was a Thursday.
        let home = |id: PersonId, at: u64| {
            self.people[id as usize]
                .isolating_from
                .is_some_and(|from| from <= at)
        };
        for members in &self.households {
            for (i, &a) in members.iter().enumerate() {
                for &b in &members[i + 1..] {
                    // Evenings at home, close.
                    let start = day_start + rng.between(17 * 60, 20 * 60) * MINUTE;
                    out.push(Encounter {
                        a,
                        b,
                        start,
                        seconds: (rng.between(60, 180) * MINUTE) as u32,
                        attenuation_db: rng.between(40, 62) as u8,
                        setting: Setting::Household,
                    });
                }
            }
        }
        if weekday {
            for (setting, members) in &self.groups {
                for &a in members {
                    let meetings = rng.poisson(2.5);
                    for _ in 0..meetings {
                        let b = members[rng.below(members.len() as u64) as usize];
                        if a == b {
                            continue;
                        }
                        let start = day_start + rng.between(8 * 60, 15 * 60) * MINUTE;
                        if home(a, start) || home(b, start) {
                            continue;
                        }
                        out.push(Encounter {
                            a,
                            b,
                            start,
                            seconds: (rng.between(10, 90) * MINUTE) as u32,
                            attenuation_db: rng.between(48, 78) as u8,
                            setting: *setting,
                        });
                    }
                }
            }
        }
        let n = self.people.len() as u64;
        for a in 0..n as PersonId {
            for _ in 0..rng.poisson(1.5) {
                let b = rng.below(n) as PersonId;
                if a == b {
                    continue;
                }
                let start = day_start + rng.between(7 * 60, 21 * 60) * MINUTE;
                if home(a, start) || home(b, start) {
                    continue;
                }
                out.push(Encounter {
                    a,
                    b,
                    start,
                    seconds: (rng.between(3, 40) * MINUTE) as u32,
                    attenuation_db: rng.between(50, 85) as u8,
                    setting: Setting::Random,
                });
            }
        }
        out.sort_by_key(|e| e.start);
        out
    }
}

/// Where things happen: each household's and each workplace's or class's neighbourhood (its
/// encounter-token area), and the places a Bluetooth sniffer watches. Drawn from streams of
/// their own, so that the population, the contacts and the epidemic do not change with them.
pub struct Places {
    pub household_area: Vec<u8>,
    pub group_area: Vec<u8>,
    /// Per workplace or class: a sniffer records every broadcast there.
    pub sniffed: Vec<bool>,
}

impl Places {
    pub fn generate(
        settings: &SimSettings,
        population: &Population,
        area_rng: &mut SeededRng,
        sniffer_rng: &mut SeededRng,
    ) -> Self {
        let areas = u64::from(settings.areas);
        Self {
            household_area: (0..population.households.len())
                .map(|_| area_rng.below(areas) as u8)
                .collect(),
            group_area: (0..population.groups.len())
                .map(|_| area_rng.below(areas) as u8)
                .collect(),
            sniffed: (0..population.groups.len())
                .map(|_| sniffer_rng.chance(settings.sniffed_places))
                .collect(),
        }
    }

    /// The neighbourhood a person lives in.
    pub fn home_area(&self, population: &Population, id: PersonId) -> u8 {
        self.household_area[population.people[id as usize].household as usize]
    }

    /// Where an encounter happens: at home, at the workplace or class, or (meeting a
    /// stranger) in the neighbourhood of the first of the two.
    pub fn area_of(&self, population: &Population, encounter: &Encounter) -> u8 {
        match (
            encounter.setting,
            population.people[encounter.a as usize].group,
        ) {
            (Setting::Work | Setting::School, Some((_, group))) => self.group_area[group as usize],
            _ => self.home_area(population, encounter.a),
        }
    }

    /// The sniffed workplace or class an encounter happens in, if any.
    pub fn sniffed_place(&self, population: &Population, encounter: &Encounter) -> Option<u32> {
        match (
            encounter.setting,
            population.people[encounter.a as usize].group,
        ) {
            (Setting::Work | Setting::School, Some((_, group))) if self.sniffed[group as usize] => {
                Some(group)
            }
            _ => None,
        }
    }
}

fn shuffle<T>(items: &mut [T], rng: &mut SeededRng) {
    for i in (1..items.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        items.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn population_is_seeded_and_complete() {
        let settings = SimSettings::new(2000, 5, 1);
        let a = Population::generate(&settings, &mut SeededRng::new(1));
        let b = Population::generate(&settings, &mut SeededRng::new(1));
        assert_eq!(a.people.len(), 2000);
        assert_eq!(
            a.households.iter().map(Vec::len).sum::<usize>(),
            2000,
            "everyone lives somewhere"
        );
        let apps = a.people.iter().filter(|p| p.app).count();
        assert!((1000..1400).contains(&apps), "about 60% adoption: {apps}");
        assert_eq!(
            a.people.iter().map(|p| p.household).collect::<Vec<_>>(),
            b.people.iter().map(|p| p.household).collect::<Vec<_>>()
        );
    }

    #[test]
    fn encounters_stay_within_the_day_and_respect_isolation() {
        let settings = SimSettings::new(500, 5, 2);
        let mut population = Population::generate(&settings, &mut SeededRng::new(2));
        let day = 1_772_323_200 + 2 * DAY; // a Tuesday
        population.people[7].isolating_from = Some(day);
        let encounters = population.encounters(day, &mut SeededRng::new(3));
        assert!(encounters.windows(2).all(|w| w[0].start <= w[1].start));
        for e in &encounters {
            assert!(e.start >= day && e.start + u64::from(e.seconds) <= day + DAY);
            assert_ne!(e.a, e.b);
            if e.a == 7 || e.b == 7 {
                assert_eq!(e.setting, Setting::Household);
            }
        }
        assert!(encounters.iter().any(|e| e.setting == Setting::Work));
    }
}
